use super::*;

#[test]
fn a_recorded_request_renders_every_series_with_its_labels() {
    let k = GenAiLabels {
        operation: label("chat"),
        provider: label("openai"),
        request_model: model_label("render-test-model"),
        response_model: model_label("render-test-model-2024"),
        client: label("render-test-client"),
        backend: label("render-test-backend"),
        error: EMPTY,
    };
    let usage = Usage { input_tokens: 10, output_tokens: 5, cache_read_input_tokens: 2, ..Usage::default() };
    record_request(
        &k,
        &GenAiSample {
            status: 200,
            duration: 0.5,
            ttft: Some(0.3),
            tpot: Some(0.02),
            usage: Some(&usage),
            ..Default::default()
        },
    );
    let failed = GenAiLabels { error: label("upstream_timeout"), ..k };
    record_request(&failed, &GenAiSample { status: 504, duration: 3.0, usage_unknown: true, ..GenAiSample::default() });
    count_fallback("render-test-backend", "status_5xx");
    let text = render();
    let base = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_original_model=\"render-test-model\",gen_ai_request_model=\"render-test-model\",gen_ai_response_model=\"render-test-model-2024\",client=\"render-test-client\",backend=\"render-test-backend\"";
    assert!(
        text.contains(&format!("gen_ai_client_token_usage_sum{{{base},gen_ai_token_type=\"input\"}} 12\n")),
        "{text}"
    );
    assert!(text.contains(&format!("gen_ai_client_token_usage_sum{{{base},gen_ai_token_type=\"cached_input\"}} 2\n")));
    assert!(!text.contains(&format!("{base},gen_ai_token_type=\"reasoning\"")));
    assert!(text.contains(&format!("gen_ai_server_request_duration_seconds_count{{{base}}} 1\n")), "{text}");
    assert!(text.contains(&format!(
        "gen_ai_server_request_duration_seconds_count{{{base},error_type=\"upstream_timeout\"}} 1\n"
    )));
    assert!(text.contains(&format!("gen_ai_server_time_to_first_token_seconds_bucket{{{base},le=\"0.25\"}} 0\n")));
    assert!(text.contains(&format!("gen_ai_server_time_to_first_token_seconds_bucket{{{base},le=\"0.5\"}} 1\n")));
    assert!(text.contains(&format!("switchyard_usage_unknown_total{{{base}}} 1\n")), "{text}");
    assert!(text.contains("switchyard_fallbacks_total{backend=\"render-test-backend\",reason=\"status_5xx\"} 1\n"));
    let requests = "switchyard_requests_total{client=\"render-test-client\",status_class=\"2xx\",error_type=\"\"}";
    assert!(text.contains(requests), "{text}");
    assert!(text
        .contains("# TYPE switchyard_config_reloads_total counter\nswitchyard_config_reloads_total{result=\"ok\"} "));
}

#[test]
fn recording_from_many_threads_sums_at_scrape() {
    let k = GenAiLabels { client: label("threads-test-client"), operation: label("embeddings"), ..Default::default() };
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    record_request(&k, &GenAiSample { duration: 0.001, ..GenAiSample::default() });
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = render();
    let line = text
        .lines()
        .find(|l| l.starts_with("gen_ai_server_request_duration_seconds_count{") && l.contains("threads-test-client"))
        .unwrap();
    assert!(line.ends_with(" 4000"), "{line}");
}

#[test]
fn label_values_are_escaped() {
    let mut out = String::new();
    escape("a\"b\\c\nd", &mut out);
    assert_eq!(out, "a\\\"b\\\\c\\nd");
}
