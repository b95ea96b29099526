use super::*;

fn schema(text: &str) -> Result<Value, TranslateError> {
    gemini_schema(&Ordered::parse(text).unwrap(), "s", true)
}

#[test]
fn ordered_keeps_key_order_and_round_trips_compactly() {
    let o = Ordered::parse(r#"{"z": 1, "a": [true, null, 1.5, "x"], "m": {"y": {}, "b": -2}}"#).unwrap();
    assert_eq!(o.to_json(), r#"{"z":1,"a":[true,null,1.5,"x"],"m":{"y":{},"b":-2}}"#);
    assert_eq!(Ordered::parse(r#"{"a":1,"b":2,"a":3}"#).unwrap().to_json(), r#"{"a":3,"b":2}"#);
    assert_eq!(Ordered::from_value(&json!({"b": 1, "a": 2})).to_json(), r#"{"a":2,"b":1}"#);
}

#[test]
fn types_are_upper_case_and_property_order_is_kept() {
    let out = schema(
        r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0},
            "tags":{"type":"array","items":{"type":"string"},"maxItems":3}},"required":["name","ghost"],
            "additionalProperties":false,"$schema":"http://json-schema.org/draft-07/schema#"}"#,
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"type": "OBJECT", "propertyOrdering": ["name", "age", "tags"], "required": ["name"],
            "properties": {"name": {"type": "STRING"}, "age": {"type": "INTEGER", "minimum": 0},
                "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 3}}})
    );
}

#[test]
fn nullable_type_arrays_and_null_variants_become_nullable() {
    assert_eq!(schema(r#"{"type":["string","null"]}"#).unwrap(), json!({"type": "STRING", "nullable": true}));
    assert_eq!(
        schema(r#"{"anyOf":[{"type":"integer"},{"type":"null"}],"description":"n"}"#).unwrap(),
        json!({"type": "INTEGER", "nullable": true, "description": "n"})
    );
    assert_eq!(
        schema(r#"{"oneOf":[{"type":"integer"},{"type":"string"}]}"#).unwrap(),
        json!({"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]})
    );
    assert_eq!(
        schema(r#"{"type":["integer","string"],"minimum":1,"maxLength":2}"#).unwrap(),
        json!({"anyOf": [{"type": "INTEGER", "minimum": 1}, {"type": "STRING", "maxLength": 2}]})
    );
}

#[test]
fn references_are_inlined_and_recursion_is_refused() {
    let out = schema(
        r##"{"type":"object","properties":{"home":{"$ref":"#/$defs/Addr","description":"where"},
            "work":{"$ref":"#/definitions/Addr"}},
            "$defs":{"Addr":{"type":"object","properties":{"city":{"type":"string"}}}},
            "definitions":{"Addr":{"type":"object","properties":{"zip":{"type":"string"}}}}}"##,
    )
    .unwrap();
    assert_eq!(out["properties"]["home"]["properties"]["city"], json!({"type": "STRING"}));
    assert_eq!(out["properties"]["home"]["description"], "where");
    assert_eq!(out["properties"]["work"]["properties"]["zip"], json!({"type": "STRING"}));
    assert!(out.get("$defs").is_none() && out.get("definitions").is_none());

    let e = schema(
        r##"{"type":"object","properties":{"node":{"$ref":"#/$defs/Node"}},
            "$defs":{"Node":{"type":"object","properties":{"next":{"$ref":"#/$defs/Node"}}}}}"##,
    )
    .unwrap_err();
    assert_eq!(e.field(), Some("s.properties.node.properties.next.$ref"));
    assert!(e.to_string().contains("recursive"), "{e}");
    let e = schema(r#"{"$ref":"https://example.com/s.json"}"#).unwrap_err();
    assert_eq!(e.field(), Some("s.$ref"));
    let e = schema(r##"{"$ref":"#/$defs/Missing"}"##).unwrap_err();
    assert!(e.to_string().contains("points to nothing"), "{e}");
}

#[test]
fn enums_and_consts_of_strings_are_enums_others_are_described() {
    assert_eq!(
        schema(r#"{"enum":["a","b",null]}"#).unwrap(),
        json!({"type": "STRING", "format": "enum", "enum": ["a", "b"], "nullable": true})
    );
    assert_eq!(
        schema(r#"{"type":"string","const":"fixed"}"#).unwrap(),
        json!({"type": "STRING", "format": "enum", "enum": ["fixed"]})
    );
    assert_eq!(
        schema(r#"{"type":"integer","enum":[1,2],"description":"Level."}"#).unwrap(),
        json!({"type": "INTEGER", "description": "Level. Allowed values: 1, 2."})
    );
}

#[test]
fn all_of_is_merged_and_unsupported_keywords_are_dropped() {
    let out = schema(
        r##"{"allOf":[{"$ref":"#/$defs/A"},{"type":"object","properties":{"b":{"type":"boolean"}},"required":["b"]}],
            "$defs":{"A":{"type":"object","properties":{"a":{"type":"number","format":"double","exclusiveMinimum":0}},
            "required":["a"],"additionalProperties":{"type":"string"}}},"$comment":"x","default":{}}"##,
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"type": "OBJECT", "propertyOrdering": ["a", "b"], "required": ["a", "b"],
            "properties": {"a": {"type": "NUMBER", "format": "double"}, "b": {"type": "BOOLEAN"}}})
    );
    let out =
        schema(r#"{"type":"string","format":"uri","pattern":"^h","not":{"const":"x"},"examples":["h"],"minLength":1}"#)
            .unwrap();
    assert_eq!(out, json!({"type": "STRING", "pattern": "^h", "minLength": 1}));
}

#[test]
fn arrays_always_have_items() {
    assert_eq!(schema(r#"{"type":"array"}"#).unwrap(), json!({"type": "ARRAY", "items": {}}));
    assert_eq!(
        schema(r#"{"type":"array","prefixItems":[{"type":"string"},{"type":"number"}]}"#).unwrap(),
        json!({"type": "ARRAY", "items": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]}})
    );
    assert_eq!(
        schema(r#"{"type":"array","items":{"type":"array"}}"#).unwrap(),
        json!({"type": "ARRAY", "items": {"type": "ARRAY", "items": {}}})
    );
}

#[test]
fn bad_schemas_are_refused_with_their_path() {
    assert_eq!(schema(r#"{"type":"tuple"}"#).unwrap_err().field(), Some("s.type"));
    assert_eq!(schema(r#"{"type":"object","properties":{"a":false}}"#).unwrap_err().field(), Some("s.properties.a"));
    assert_eq!(schema(r#"{"anyOf":{"type":"string"}}"#).unwrap_err().field(), Some("s.anyOf"));
    let mut deep = String::from(r#"{"type":"string"}"#);
    for _ in 0..60 {
        deep = format!(r#"{{"type":"array","items":{deep}}}"#);
    }
    assert!(schema(&deep).unwrap_err().to_string().contains("too deeply"));
}

#[test]
fn parameters_without_properties_are_omitted() {
    let p = |t: &str| parameters_schema(&Ordered::parse(t).unwrap(), "p").unwrap();
    assert_eq!(p(r#"{"type":"object","properties":{}}"#), None);
    assert_eq!(p(r#"{"type":"object","additionalProperties":true}"#), None);
    assert_eq!(p("{}"), None);
    assert!(p(r#"{"type":"object","properties":{"a":{"type":"string"}}}"#).is_some());
    // Function parameters carry no propertyOrdering.
    let out = p(r#"{"type":"object","properties":{"b":{"type":"string"},"a":{"type":"string"}}}"#).unwrap();
    assert!(out.get("propertyOrdering").is_none());
}

#[test]
fn signatures_ride_in_ids_as_base64url_and_come_back_padded() {
    let sig = "ab+/cd==";
    let id = call_id("call_", None, 0xabc, 2, Some(sig));
    assert_eq!(id, "call_0000000000000abc_2__thought__ab-_cd");
    assert_eq!(signature_in_id(&id).as_deref(), Some(sig));
    assert_eq!(call_id("toolu_", Some("fc-1"), 0, 0, None), "fc-1");
    assert_eq!(signature_in_id("call_1"), None);
    assert_eq!(signature_in_id("call_1__thought__a+b"), None, "not base64url");
}

#[test]
fn foreign_calls_get_the_placeholder_on_the_first_call_only() {
    let mut contents = vec![
        json!({"role": "model", "parts": [{"text": "x"}, {"functionCall": {"name": "a", "args": {}}},
            {"functionCall": {"name": "b", "args": {}}}]}),
        json!({"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}}, "thoughtSignature": "c2ln"}]}),
        json!({"role": "user", "parts": [{"text": "y"}]}),
    ];
    sign_foreign_calls(&mut contents);
    assert_eq!(contents[0]["parts"][1]["thoughtSignature"], FOREIGN_SIGNATURE);
    assert!(contents[0]["parts"][2].get("thoughtSignature").is_none());
    assert_eq!(contents[1]["parts"][0]["thoughtSignature"], "c2ln");
}

#[test]
fn blocked_prompts_are_refusals_and_finish_reasons_are_classified() {
    let r: GenerateContentResponse = serde_json::from_str(
        r#"{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe"},"usageMetadata":{"promptTokenCount":5}}"#,
    )
    .unwrap();
    match r.refusal() {
        Some(TranslateError::Refused { status: 400, code, message }) => {
            assert_eq!(code, "content_filter");
            assert!(message.contains("SAFETY") && message.ends_with("unsafe"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(finish("RECITATION"), Finish::Filtered);
    assert_eq!(finish("MAX_TOKENS"), Finish::Length);
    assert_eq!(finish("MALFORMED_FUNCTION_CALL"), Finish::Other);
}

#[test]
fn google_errors_are_read_from_objects_and_arrays() {
    let e = google_error(br#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}]"#).unwrap();
    assert_eq!((e.code, e.message.as_deref()), (Some(429), Some("quota")));
    assert_eq!(stream_error_status(&GoogleError { status: Some("UNAVAILABLE".into()), ..Default::default() }), 503);
    assert!(google_error(b"<html>").is_none());
}

#[test]
fn urls_need_a_known_extension() {
    assert_eq!(mime_from_uri("gs://b/cat.JPG?x=1"), Some("image/jpeg"));
    assert_eq!(mime_from_uri("https://example.com/img"), None);
    assert_eq!(mime_from_uri("https://example.com.org/"), None);
    assert!(url_part("https://x.test/a", "f").is_err());
}
