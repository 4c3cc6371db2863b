use super::*;
use serde_json::json;

/// The index of generation `generation` (config hash `hash`) announcing parts hashing to `parts`.
fn index(generation: u64, hash: &str, parts: &[&str]) -> ObjectMeta {
    ObjectMeta {
        name: Some("g-config-0".into()),
        annotations: Some(BTreeMap::from([
            (CONFIG_GENERATION.to_owned(), generation.to_string()),
            (ANNOTATION_CONFIG_HASH.to_owned(), hash.to_owned()),
            (ANNOTATION_CONFIG_PARTS.to_owned(), parts.join(",")),
        ])),
        ..ObjectMeta::default()
    }
}

/// Part `n`, last written by generation `generation`, hashing to `hash`.
fn part(n: usize, generation: u64, hash: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(format!("g-config-{n}")),
        annotations: Some(BTreeMap::from([
            (CONFIG_GENERATION.to_owned(), generation.to_string()),
            (ANNOTATION_CONFIG_PART.to_owned(), n.to_string()),
            (ANNOTATION_PART_HASH.to_owned(), hash.to_owned()),
        ])),
        ..ObjectMeta::default()
    }
}

fn summary(metas: &[ObjectMeta]) -> ShardSummary {
    summarize_shards(&metas.iter().collect::<Vec<_>>())
}

#[test]
fn shard_summaries() {
    // Part 1 untouched since generation 3, part 2 rewritten by generation 4.
    let s = summary(&[part(2, 4, "p2"), index(4, "h4", &["p1", "p2"]), part(1, 3, "p1")]);
    assert_eq!(s.complete, Some((4, "h4".into())));
    assert_eq!(s.highest, 4);
    assert_eq!(s.names, ["g-config-0", "g-config-1", "g-config-2"]);
    assert_eq!(s.part_count, Some(2));
    // Interrupted write of generation 5: a part written, not the index.
    let s = summary(&[index(4, "h4", &["p1", "p2"]), part(1, 3, "p1"), part(2, 5, "p2b")]);
    assert_eq!(s.complete, None);
    assert_eq!(s.highest, 5);
    // Shards of the byte-chunk format: no index, only the generation counts.
    let old = ObjectMeta {
        name: Some("g-config-0".into()),
        annotations: Some(BTreeMap::from([
            (CONFIG_GENERATION.to_owned(), "9".to_owned()),
            ("switchyard.dev/config-shards".to_owned(), "1".to_owned()),
            (ANNOTATION_CONFIG_HASH.to_owned(), "h9".to_owned()),
        ])),
        ..ObjectMeta::default()
    };
    let s = summary(&[old]);
    assert_eq!((s.complete, s.highest, s.part_count), (None, 9, None));
    assert_eq!(summary(&[]), ShardSummary::default());
}

#[test]
fn the_generation_moves_only_when_the_hash_does() {
    let none = ShardSummary::default();
    assert_eq!(next_generation(None, &none, "h1"), (1, true));
    let published = summary(&[index(1, "h1", &["p1"]), part(1, 1, "p1")]);
    // Nothing changed: no write, same generation (a no-op reconcile).
    assert_eq!(next_generation(Some((1, "h1")), &published, "h1"), (1, false));
    // Status not written yet, shards are: still no write.
    assert_eq!(next_generation(None, &published, "h1"), (1, false));
    // Changed config.
    assert_eq!(next_generation(Some((1, "h1")), &published, "h2"), (2, true));
    // Shards deleted by someone: rewritten under the same generation.
    assert_eq!(next_generation(Some((1, "h1")), &none, "h1"), (1, true));
    // An interrupted write of generation 2 (back to h1 meanwhile): above it, never reused.
    let interrupted = summary(&[index(1, "h1", &["p1"]), part(1, 2, "p1b")]);
    assert_eq!(next_generation(Some((1, "h1")), &interrupted, "h1"), (3, true));
    assert_eq!(next_generation(Some((1, "h1")), &interrupted, "h3"), (3, true));
}

fn secret(meta: ObjectMeta) -> Secret {
    Secret {
        metadata: meta,
        ..Secret::default()
    }
}

#[test]
fn only_the_parts_that_changed_are_written_then_the_index() {
    let published = summary(&[
        index(4, "h4", &["p1", "p2", "p3"]),
        part(1, 3, "p1"),
        part(2, 4, "p2"),
        part(3, 4, "p3"),
    ]);
    // Generation 5 changes part 2; part 4 is new.
    let desired = [
        index(5, "h5", &["p1", "p2b", "p3", "p4"]),
        part(1, 5, "p1"),
        part(2, 5, "p2b"),
        part(3, 5, "p3"),
        part(4, 5, "p4"),
    ]
    .map(secret);
    let names = |w: Vec<&Secret>| w.iter().map(|s| s.metadata.name.clone().unwrap()).collect::<Vec<_>>();
    assert_eq!(
        names(shards_to_write(&desired, &published)),
        ["g-config-2", "g-config-4", "g-config-0"]
    );
    // Nothing published: every part, the index last.
    assert_eq!(
        names(shards_to_write(&desired, &ShardSummary::default())),
        ["g-config-1", "g-config-2", "g-config-3", "g-config-4", "g-config-0"]
    );
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

#[test]
fn an_edit_that_wrote_a_part_is_not_held_back_by_the_compile_time() {
    let pacing = Pacing::default();
    let fleet: FleetId = ("llm".into(), "edge".into());
    // A burst that rewrote the whole 2.5 MB configuration in a reconcile of 3 s.
    pacing.published(&fleet, 2_500_000, 2_500_000, Duration::from_secs(3));
    let wait = pacing.wait(&fleet).unwrap();
    assert!(wait > Duration::from_millis(2_900), "{wait:?}");
    // One edit: a part and the index of the same configuration, in a reconcile of 3 s.
    pacing.published(&fleet, 70_000, 2_500_000, Duration::from_secs(3));
    let wait = pacing.wait(&fleet).unwrap_or_default();
    assert!(wait <= Duration::from_millis(34), "{wait:?}");
}
