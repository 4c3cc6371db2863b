//! Shared test plumbing: a mock on a real TCP port, SSE parsing, SigV4 signing.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use switchyard_mock_provider::{router, MockState, Stats, TEST_ACCESS_KEY, TEST_SECRET_KEY};

pub struct Mock {
    pub base: String,
    pub state: MockState,
    pub http: reqwest::Client,
}

pub async fn spawn() -> Mock {
    let state = MockState::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Mock {
        base: format!("http://{addr}"),
        state,
        http: reqwest::Client::new(),
    }
}

impl Mock {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POST JSON with `Authorization: Bearer test`.
    pub async fn post_bearer(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth("test")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn stats(&self) -> Stats {
        self.http
            .get(self.url("/mock/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until `check` holds for the stats (the server counts some things just after the
    /// client has seen the end).
    pub async fn wait_stats(&self, check: impl Fn(&Stats) -> bool) -> Stats {
        for _ in 0..100 {
            let s = self.stats().await;
            if check(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = self.stats().await;
        panic!("stats never matched: {s:?}");
    }

    /// Signs a Bedrock request with SigV4 (the given keys) and sends it.
    pub async fn bedrock(&self, path: &str, body: &[u8], access: &str, secret: &str) -> reqwest::Response {
        let req = sign_bedrock(&self.url(path), body, access, secret, None);
        self.http
            .post(self.url(path))
            .headers(req.headers().clone())
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    pub async fn bedrock_ok(&self, path: &str, body: &Value) -> reqwest::Response {
        self.bedrock(
            path,
            &serde_json::to_vec(body).unwrap(),
            TEST_ACCESS_KEY,
            TEST_SECRET_KEY,
        )
        .await
    }
}

/// An `http::Request` signed for Bedrock with aws-sigv4.
pub fn sign_bedrock(
    url: &str,
    body: &[u8],
    access: &str,
    secret: &str,
    session_token: Option<&str>,
) -> http::Request<Vec<u8>> {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;

    let identity = Credentials::new(access, secret, session_token.map(str::to_owned), None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-west-2")
        .name("bedrock")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [("content-type", "application/json"), ("accept", "application/json")];
    let signable = SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body)).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder().method("POST").uri(url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let mut req = req.body(body.to_vec()).unwrap();
    instructions.apply_to_request_http1x(&mut req);
    req
}

/// One server-sent event.
#[derive(Debug)]
pub struct Sse {
    pub event: Option<String>,
    pub data: String,
}

impl Sse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

pub fn parse_sse(text: &str) -> Vec<Sse> {
    let text = text.replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push(v);
                }
            }
            Sse {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}
