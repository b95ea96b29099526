//! OpenAI and every OpenAI-compatible server: `{base_url}/chat/completions` etc., bearer auth.

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
