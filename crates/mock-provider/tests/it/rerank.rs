//! Rerank and embeddings of the providers with their own rerank APIs: Jina's shapes and
//! refusals, and Bedrock's Rerank (Agents for Amazon Bedrock Runtime), signed.

use serde_json::{json, Value};

use crate::common::spawn;

const DOCS: [&str; 3] = [
    "Carson City is the capital city of the American state of Nevada.",
    "Washington, D.C. is the capital of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
];

#[tokio::test]
async fn jina_rerank_answers_in_its_shape_and_refuses_cohere_fields() {
    let mock = spawn().await;
    let req = json!({"model": "jina-reranker-v2-base-multilingual", "query": "capital of the United States",
                     "documents": DOCS, "top_n": 2});
    let res = mock.post_bearer("/jina/v1/rerank", &req).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["results"][0]["index"], 1);
    // Documents come back unless the request says not to.
    assert_eq!(body["results"][0]["document"]["text"], DOCS[1]);
    assert_eq!(body["results"].as_array().map(Vec::len), Some(2));
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let mut cohere = req.clone();
    cohere["max_tokens_per_doc"] = json!(512);
    let res = mock.post_bearer("/jina/v1/rerank", &cohere).await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["detail"][0]["loc"], json!(["body", "max_tokens_per_doc"]));

    let res = mock
        .http
        .post(mock.url("/jina/v1/rerank"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn jina_embeddings_take_jina_names_only() {
    let mock = spawn().await;
    let req = json!({"model": "jina-embeddings-v3", "input": ["a", "b"], "dimensions": 16,
                     "embedding_type": "base64", "task": "retrieval.passage"});
    let res = mock.post_bearer("/jina/v1/embeddings", &req).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["data"][1]["embedding"].is_string());
    assert_eq!(body["usage"], json!({"total_tokens": 2, "prompt_tokens": 2}));
    // OpenAI's name for the encoding is not Jina's.
    let openai = json!({"model": "jina-embeddings-v3", "input": "a", "encoding_format": "float"});
    assert_eq!(mock.post_bearer("/jina/v1/embeddings", &openai).await.status(), 422);
}

fn bedrock_rerank(model_arn: &str) -> Value {
    json!({
        "queries": [{"type": "TEXT", "textQuery": {"text": "capital of the United States"}}],
        "sources": DOCS.iter().map(|d| json!({"type": "INLINE", "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": d}}}))
            .chain([json!({"type": "INLINE", "inlineDocumentSource": {"type": "JSON", "jsonDocument": {"capital": "yes"}}})])
            .collect::<Vec<_>>(),
        "rerankingConfiguration": {"type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": {
            "modelConfiguration": {"modelArn": model_arn}, "numberOfResults": 2}},
    })
}

#[tokio::test]
async fn bedrock_rerank_is_signed_and_checked() {
    let mock = spawn().await;
    let arn = "arn:aws:bedrock:us-west-2::foundation-model/amazon.rerank-v1:0";
    let res = mock.bedrock_ok("/rerank", &bedrock_rerank(arn)).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["results"][0]["index"], 1);
    assert!(body["results"][0]["relevanceScore"].is_f64());
    assert_eq!(body["results"][0]["document"]["textDocument"]["text"], DOCS[1]);

    // Two queries, a bare model id, a Cohere-shaped body: Bedrock's ValidationException.
    let mut two = bedrock_rerank(arn);
    two["queries"] = json!([two["queries"][0], two["queries"][0]]);
    for bad in [
        two,
        bedrock_rerank("amazon.rerank-v1:0"),
        json!({"query": "q", "documents": ["d"]}),
    ] {
        let res = mock.bedrock_ok("/rerank", &bad).await;
        assert_eq!(res.status(), 400, "{bad}");
        assert!(res.headers()["x-amzn-errortype"]
            .to_str()
            .unwrap()
            .starts_with("ValidationException"));
    }
    // Unsigned: refused like every Bedrock call.
    let res = mock
        .http
        .post(mock.url("/rerank"))
        .json(&bedrock_rerank(arn))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // Fault names work on the model of the ARN.
    let res = mock
        .bedrock_ok(
            "/rerank",
            &bedrock_rerank("arn:aws:bedrock:us-east-1::foundation-model/cohere.rerank-mock-429"),
        )
        .await;
    assert_eq!(res.status(), 429);
}
