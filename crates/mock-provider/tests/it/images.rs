//! Image models of Vertex AI (Imagen `:predict`) and Bedrock (Nova Canvas, Titan Image
//! Generator through `InvokeModel`), with the refusals of their request schemas.

use serde_json::{json, Value};

use crate::common::spawn;

const IMAGEN: &str = "/v1/projects/p/locations/us-central1/publishers/google/models/imagen-3.0-generate-002:predict";

#[tokio::test]
async fn imagen_answers_predictions_and_refuses_openai_fields() {
    let mock = spawn().await;
    let req = json!({"instances": [{"prompt": "a lighthouse"}],
                     "parameters": {"sampleCount": 2, "aspectRatio": "16:9", "outputOptions": {"mimeType": "image/png"}}});
    let res = mock.post_bearer(IMAGEN, &req).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["predictions"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["predictions"][0]["mimeType"], "image/png");
    assert!(body["predictions"][0]["bytesBase64Encoded"].is_string());

    for bad in [
        json!({"instances": [{"prompt": "x"}], "parameters": {"size": "1024x1024"}}),
        json!({"instances": [{"prompt": "x"}], "parameters": {"sampleCount": 5}}),
        json!({"instances": [{"prompt": "x"}], "parameters": {"aspectRatio": "7:4"}}),
        json!({"prompt": "x"}),
    ] {
        let res = mock.post_bearer(IMAGEN, &bad).await;
        assert_eq!(res.status(), 400, "{bad}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    }
    // Every image filtered: no predictions.
    let res = mock
        .post_bearer(IMAGEN, &json!({"instances": [{"prompt": "blocked"}]}))
        .await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!({}));
}

#[tokio::test]
async fn nova_canvas_and_titan_check_their_sizes() {
    let mock = spawn().await;
    let body = |w: u64, h: u64| {
        json!({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a lighthouse"},
               "imageGenerationConfig": {"numberOfImages": 2, "width": w, "height": h, "quality": "standard"}})
    };
    let res = mock
        .bedrock_ok("/model/amazon.nova-canvas-v1%3A0/invoke", &body(1792, 1024))
        .await;
    assert_eq!(res.status(), 200);
    let out: Value = res.json().await.unwrap();
    assert_eq!(out["images"].as_array().map(Vec::len), Some(2));
    // Titan has a list of sizes, and 1792x1024 is not on it.
    let res = mock
        .bedrock_ok("/model/amazon.titan-image-generator-v2%3A0/invoke", &body(1792, 1024))
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.headers()["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("ValidationException"));
    let res = mock
        .bedrock_ok("/model/amazon.titan-image-generator-v2%3A0/invoke", &body(1024, 1024))
        .await;
    assert_eq!(res.status(), 200);
    // OpenAI's body is not Bedrock's.
    let res = mock
        .bedrock_ok(
            "/model/amazon.nova-canvas-v1%3A0/invoke",
            &json!({"prompt": "x", "n": 1}),
        )
        .await;
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn stability_answers_one_image_and_refuses_amazon_bodies() {
    let mock = spawn().await;
    let path = "/model/stability.sd3-5-large-v1%3A0/invoke";
    let res = mock
        .bedrock_ok(
            path,
            &json!({"prompt": "a fox", "mode": "text-to-image", "aspect_ratio": "16:9", "output_format": "png"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["images"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["finish_reasons"], json!([null]));
    for bad in [
        json!({"prompt": "a fox", "aspect_ratio": "4:3"}),
        json!({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a fox"}}),
    ] {
        assert_eq!(mock.bedrock_ok(path, &bad).await.status(), 400, "{bad}");
    }
    let res = mock.bedrock_ok(path, &json!({"prompt": "blocked"})).await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"finish_reasons": ["Filter reason: prompt"]})
    );
}
