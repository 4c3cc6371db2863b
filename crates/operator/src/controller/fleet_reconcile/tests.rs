use super::*;
use serde_json::json;

fn shard(name: &str, generation: u64, count: usize, hash: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        annotations: Some(BTreeMap::from([
            (CONFIG_GENERATION.to_owned(), generation.to_string()),
            (ANNOTATION_CONFIG_SHARDS.to_owned(), count.to_string()),
            (ANNOTATION_CONFIG_HASH.to_owned(), hash.to_owned()),
        ])),
        ..ObjectMeta::default()
    }
}

fn summary(metas: &[ObjectMeta]) -> ShardSummary {
    summarize_shards(&metas.iter().collect::<Vec<_>>())
}

#[test]
fn shard_summaries() {
    let s = summary(&[shard("g-config-1", 4, 2, "h4"), shard("g-config-0", 4, 2, "h4")]);
    assert_eq!(s.complete, Some((4, "h4".into())));
    assert_eq!(s.highest, 4);
    assert_eq!(s.names, ["g-config-0", "g-config-1"]);
    // Interrupted write of generation 5.
    let s = summary(&[shard("g-config-0", 5, 2, "h5"), shard("g-config-1", 4, 2, "h4")]);
    assert_eq!(s.complete, None);
    assert_eq!(s.highest, 5);
    assert_eq!(summary(&[]), ShardSummary::default());
}

#[test]
fn the_generation_moves_only_when_the_hash_does() {
    let none = ShardSummary::default();
    assert_eq!(next_generation(None, &none, "h1"), (1, true));
    let published = summary(&[shard("g-config-0", 1, 1, "h1")]);
    // Nothing changed: no write, same generation (a no-op reconcile).
    assert_eq!(next_generation(Some((1, "h1")), &published, "h1"), (1, false));
    // Status not written yet, shards are: still no write.
    assert_eq!(next_generation(None, &published, "h1"), (1, false));
    // Changed config.
    assert_eq!(next_generation(Some((1, "h1")), &published, "h2"), (2, true));
    // Shards deleted by someone: rewritten under the same generation.
    assert_eq!(next_generation(Some((1, "h1")), &none, "h1"), (1, true));
    // An interrupted write of generation 2 (back to h1 meanwhile): above it, never reused.
    let interrupted = summary(&[shard("g-config-0", 2, 2, "h2"), shard("g-config-1", 1, 2, "h1")]);
    assert_eq!(next_generation(Some((1, "h1")), &interrupted, "h1"), (3, true));
    assert_eq!(next_generation(Some((1, "h1")), &interrupted, "h3"), (3, true));
}

fn pod(name: &str, fleet: &str, ready: bool, generation: Option<&str>) -> Arc<Pod> {
    let mut annotations = serde_json::Map::new();
    if let Some(g) = generation {
        annotations.insert(CONFIG_GENERATION.into(), json!(g));
    }
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "llm", "labels": {LABEL_FLEET: fleet}, "annotations": annotations},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap(),
    )
}

#[test]
fn pods_are_counted_per_fleet_and_generation() {
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "edge", "namespace": "llm"},
        "status": {"replicas": 4, "readyReplicas": 3, "conditions": [{"type": "Available", "status": "True"}]},
    }))
    .unwrap();
    let pods = vec![
        pod("a", "edge", true, Some("7")),
        pod("b", "edge", true, Some("6")),
        pod("c", "edge", true, Some("7")),
        pod("d", "edge", false, None),
        pod("e", "other", true, Some("7")),
    ];
    let o = observe_pods(&deployment, &pods, &("llm".into(), "edge".into()), 7);
    assert_eq!(
        o,
        PodsObserved {
            replicas: Some(4),
            ready_replicas: Some(3),
            available: true,
            ready_pods: 3,
            programmed_pods: 2,
        }
    );
    assert!(!o.programmed());
    let o = observe_pods(&deployment, &pods[..1], &("llm".into(), "edge".into()), 7);
    assert!(o.programmed());
}

#[test]
fn large_configurations_are_paced_small_ones_not() {
    assert_eq!(publish_pause(2 * 1024), Duration::from_millis(0));
    assert_eq!(publish_pause(2_500_000), Duration::from_millis(1192));
    assert_eq!(publish_pause(usize::MAX), MAX_PUBLISH_PAUSE);
}
