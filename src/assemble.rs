//! The image documents of a build, assembled from what the earlier phases produced:
//! config (runtime settings, history, diff_ids), build record and manifest. Pure
//! functions, no I/O, so each rule is tested on its own.
use crate::build_model::{BuildOptions, LayerSummary, PurgeMode, TOOL_VERSION};
use crate::oci::{Descriptor, Digest, History, ImageConfig, Manifest, MediaType, RootFs};
use crate::recipe::Recipe;
use crate::record::{BuildRecord, InitRecord, RECORD_ANNOTATION};
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// The build's result config: the base's, with this build's layers, runtime
/// settings, labels and history; Docker-only container fields dropped.
pub fn image_config(
    base: &serde_json::Value,
    layers: &[LayerSummary],
    recipe: &Recipe,
    build_args: &BTreeMap<String, String>,
    created: &str,
) -> Result<ImageConfig> {
    if !base.is_object() {
        bail!("base config is not a JSON object");
    }
    let mut config = ImageConfig::from_value(base.clone())?;
    config.created = Some(created.to_string());
    config.rootfs = RootFs::layers(layers.iter().map(|l| l.diff_id.clone()).collect());
    for k in crate::oci::config::DOCKER_ONLY {
        config.extra.remove(k);
    }
    let img = &recipe.image;
    let run = &mut config.config;
    if let Some(e) = &img.entrypoint {
        run.entrypoint = Some(Some(e.clone()));
    }
    if let Some(c) = &img.cmd {
        run.cmd = Some(Some(c.clone()));
    }
    if let Some(u) = &img.user {
        run.user = Some(Some(u.clone()));
    }
    if let Some(w) = &img.workdir {
        run.working_dir = Some(Some(w.clone()));
    }
    for (k, v) in &img.env {
        run.set_env(k, v);
    }
    for (k, v) in &img.labels {
        run.labels.insert(k.clone(), v.clone());
    }
    for (k, v) in build_args {
        if !img.accepts(k) {
            let accepted: Vec<&str> = (img.build_args.iter())
                .chain(img.build_arg_labels.keys())
                .map(String::as_str)
                .collect();
            bail!(
                "--build-arg {k}: the recipe does not accept it (accepted: {})",
                if accepted.is_empty() {
                    "none".into()
                } else {
                    accepted.join(", ")
                }
            );
        }
        run.labels
            .insert(format!("dev.nemoclaw.build-arg.{k}"), v.clone());
    }
    run.labels.extend(img.labels_from_args(build_args));
    Ok(config)
}

/// The `created_by` of the layers this tool adds (None: no such layer).
pub struct NewLayers {
    pub recipe: Option<String>,
    pub artifacts: Option<String>,
}

impl NewLayers {
    /// `recipe_layer`: the build wrote a recipe layer; `artifacts`: the digest of the
    /// artifacts when it wrote an artifacts layer.
    pub fn describe(
        recipe: &Recipe,
        purge_mode: PurgeMode,
        recipe_layer: bool,
        artifacts: Option<&Digest>,
    ) -> NewLayers {
        let name = recipe.name.clone().unwrap_or_default();
        NewLayers {
            recipe: recipe_layer.then(|| {
                format!(
                    "nemoclaw-build {TOOL_VERSION}: recipe {name} ({}), purge-mode {}",
                    recipe.digest(),
                    format!("{purge_mode:?}").to_lowercase()
                )
            }),
            artifacts: artifacts.map(|d| format!("nemoclaw-build {TOOL_VERSION}: artifacts {d}")),
        }
    }
}

/// The result's history: the base's when its non-empty entries match the base
/// layers one to one (else one plain entry per base layer), every entry dated, then
/// one entry per layer this build added.
pub fn history(
    base: Vec<History>,
    base_layers: usize,
    created: &str,
    new: &NewLayers,
) -> Vec<History> {
    let non_empty = base.iter().filter(|h| !h.is_empty_layer()).count();
    let mut history = if non_empty == base_layers {
        base
    } else {
        (0..base_layers)
            .map(|i| History::step(created, format!("base layer {}", i + 1), None))
            .collect()
    };
    for h in &mut history {
        if h.created.is_none() {
            h.created = Some(serde_json::Value::String(created.to_string()));
        }
    }
    if let Some(by) = &new.recipe {
        history.push(History::step(
            created,
            by.clone(),
            Some("nemoclaw-build recipe layer"),
        ));
    }
    if let Some(by) = &new.artifacts {
        history.push(History::step(
            created,
            by.clone(),
            Some("nemoclaw-build artifacts layer"),
        ));
    }
    history
}

/// What the record says about the base and the init binary.
pub struct RecordInputs<'a> {
    pub base_name: &'a str,
    pub base_digest: Option<String>,
    pub artifacts_digest: Option<Digest>,
    pub artifacts_image: Option<crate::record::ArtifactsImageRecord>,
    pub init_target: &'a str,
}

/// The build record: every input needed to rebuild the same bytes.
pub fn record(opts: &BuildOptions, inputs: RecordInputs) -> Result<BuildRecord> {
    Ok(BuildRecord {
        artifacts_digest: inputs.artifacts_digest,
        artifacts_image: inputs.artifacts_image,
        base: Some(inputs.base_name.to_string()),
        base_digest: inputs.base_digest,
        build_args: opts.build_args.clone(),
        compression: Some(opts.compression.describe()),
        labels: opts.recipe.image.labels_from_args(&opts.build_args),
        init: Some(InitRecord {
            digest: Digest::of(crate::steps::init_binary(opts.arch)?.0),
            target: inputs.init_target.to_string(),
        }),
        platform: opts
            .open
            .platform
            .as_deref()
            .map(|p| crate::platform::Platform::parse(p).map(|p| p.to_string()))
            .transpose()?,
        purge_mode: Some(opts.purge_mode),
        recipe: Some(crate::source::portable_name(std::path::Path::new(
            &opts.recipe.source_name,
        ))),
        recipe_digest: Some(Digest::parse(&opts.recipe.digest())?),
        source_date_epoch: Some(opts.epoch),
        tool: Some(format!("nemoclaw-build {TOOL_VERSION}")),
        extra: BTreeMap::new(),
    })
}

/// The image manifest: config, layers, and annotations naming the creation time,
/// the base and the build record.
pub fn manifest(
    config: Descriptor,
    layers: &[LayerSummary],
    created: &str,
    record: &BuildRecord,
) -> Manifest {
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.created".to_string(),
        created.to_string(),
    );
    if let Some(name) = &record.base {
        annotations.insert(
            "org.opencontainers.image.base.name".to_string(),
            name.clone(),
        );
    }
    if let Some(d) = record
        .base_digest
        .as_ref()
        .filter(|d| d.starts_with("sha256:"))
    {
        annotations.insert(
            "org.opencontainers.image.base.digest".to_string(),
            d.clone(),
        );
    }
    annotations.insert(RECORD_ANNOTATION.to_string(), record.annotation());
    let layers = layers
        .iter()
        .map(|l| Descriptor::new(l.media_type.clone(), l.digest.clone(), l.size))
        .collect();
    Manifest::oci(config, layers, annotations)
}

/// The config descriptor for its canonical bytes.
pub fn config_descriptor(bytes: &[u8]) -> Descriptor {
    Descriptor::new(MediaType::OciConfig, Digest::of(bytes), bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn recipe(extra: &str) -> Recipe {
        let text = format!("name = \"t\"\n[image]\n{extra}\n");
        Recipe::parse(text.as_bytes(), "t.toml", std::path::Path::new(".")).unwrap()
    }

    fn layer(n: u8) -> LayerSummary {
        LayerSummary {
            digest: Digest::of(&[n]),
            diff_id: Digest::of(&[n, n]),
            size: n as u64,
            media_type: MediaType::OciLayerGzip,
            action: "new".into(),
        }
    }

    fn base() -> Value {
        json!({"architecture": "amd64", "os": "linux", "container": "c", "id": "i",
            "config": {"Env": ["PATH=/bin", "A=1"], "Entrypoint": null, "Cmd": ["sh"],
                       "Labels": {"keep": "k", "over": "base"}, "Volumes": null},
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(b"old")]},
            "history": [{"created_by": "x", "created": null}, {"empty_layer": true}]})
    }

    #[test]
    fn config_merges_runtime_settings_and_keeps_the_rest() {
        let r = recipe(
            "user = \"u\"\nbuild_args = [\"B\"]\n[image.env]\nPATH = \"/usr/bin\"\nNEW = \"n\"\n[image.labels]\nover = \"recipe\"",
        );
        let args = [("B".to_string(), "b".to_string())].into();
        let c = image_config(&base(), &[layer(1), layer(2)], &r, &args, "T").unwrap();
        let v = c.to_value();
        assert_eq!(v["created"], "T");
        assert_eq!(
            v["rootfs"]["diff_ids"],
            json!([Digest::of(&[1, 1]), Digest::of(&[2, 2])])
        );
        assert!(v.get("container").is_none() && v.get("id").is_none(), "{v}");
        let run = &v["config"];
        assert_eq!(run["Env"], json!(["PATH=/usr/bin", "A=1", "NEW=n"]));
        assert_eq!(run["Entrypoint"], Value::Null, "the base's null stays");
        assert_eq!(run["Cmd"], json!(["sh"]));
        assert_eq!(run["User"], "u");
        assert!(run.get("WorkingDir").is_none(), "absent stays absent");
        assert_eq!(run["Volumes"], Value::Null);
        assert_eq!(
            run["Labels"],
            json!({"keep": "k", "over": "recipe", "dev.nemoclaw.build-arg.B": "b"})
        );
    }

    #[test]
    fn an_unaccepted_build_arg_is_refused_by_name() {
        let args = [("X".to_string(), "1".to_string())].into();
        let e = image_config(&base(), &[], &recipe(""), &args, "T").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--build-arg X: the recipe does not accept it (accepted: none)"
        );
    }

    /// `image.build_arg_labels`: the arg is accepted and its value becomes the label.
    #[test]
    fn build_arg_labels_set_labels() {
        let r = recipe("[image.build_arg_labels]\nREV = \"org.opencontainers.image.revision\"\n");
        let args = [("REV".to_string(), "abc123".to_string())].into();
        let c = image_config(&base(), &[], &r, &args, "T").unwrap();
        assert_eq!(
            c.config.labels["org.opencontainers.image.revision"],
            "abc123"
        );
        assert_eq!(c.config.labels["dev.nemoclaw.build-arg.REV"], "abc123");
        assert_eq!(
            r.image.labels_from_args(&args),
            [(
                "org.opencontainers.image.revision".to_string(),
                "abc123".to_string()
            )]
            .into()
        );
        let e = image_config(
            &base(),
            &[],
            &r,
            &[("X".to_string(), "1".to_string())].into(),
            "T",
        )
        .unwrap_err();
        assert!(e.to_string().ends_with("(accepted: REV)"), "{e}");
        let bad = Recipe::parse(
            b"[image.build_arg_labels]\nA = \"has space\"\n",
            "r.toml",
            std::path::Path::new("."),
        );
        assert!(format!("{:#}", bad.unwrap_err()).contains("not a label key"));
    }

    #[test]
    fn a_config_that_is_not_an_object_is_refused() {
        let e = image_config(&json!([1]), &[], &recipe(""), &BTreeMap::new(), "T").unwrap_err();
        assert_eq!(e.to_string(), "base config is not a JSON object");
    }

    fn new_layers() -> NewLayers {
        NewLayers {
            recipe: Some("R".into()),
            artifacts: Some("A".into()),
        }
    }

    #[test]
    fn history_is_kept_when_it_covers_the_base_layers() {
        let c = ImageConfig::from_value(base()).unwrap();
        let h = history(c.history, 1, "T", &new_layers());
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(
            v,
            json!([
                {"created_by": "x", "created": null},
                {"empty_layer": true, "created": "T"},
                {"created_by": "R", "created": "T", "comment": "nemoclaw-build recipe layer"},
                {"created_by": "A", "created": "T", "comment": "nemoclaw-build artifacts layer"}
            ])
        );
    }

    #[test]
    fn history_is_replaced_when_it_does_not_cover_the_base_layers() {
        let c = ImageConfig::from_value(base()).unwrap();
        let none = NewLayers {
            recipe: None,
            artifacts: None,
        };
        let v = serde_json::to_value(history(c.history, 2, "T", &none)).unwrap();
        assert_eq!(
            v,
            json!([
                {"created_by": "base layer 1", "created": "T"},
                {"created_by": "base layer 2", "created": "T"}
            ])
        );
    }

    #[test]
    fn manifest_names_base_digest_only_when_it_is_a_digest() {
        let mut rec = BuildRecord {
            base: Some("oci:b:latest".into()),
            base_digest: Some("config:sha256:00".into()),
            ..Default::default()
        };
        let cfg = config_descriptor(b"{}");
        let m = manifest(cfg.clone(), &[layer(1)], "T", &rec);
        assert!(!m
            .annotations
            .contains_key("org.opencontainers.image.base.digest"));
        assert_eq!(
            m.annotations["org.opencontainers.image.base.name"],
            "oci:b:latest"
        );
        assert_eq!(m.annotations[RECORD_ANNOTATION], rec.annotation());
        assert_eq!(m.layers[0].digest, Digest::of(&[1]));
        assert_eq!(m.config, cfg);
        rec.base_digest = Some(Digest::of(b"m").to_string());
        let m = manifest(cfg, &[], "T", &rec);
        assert_eq!(
            m.annotations["org.opencontainers.image.base.digest"],
            Digest::of(b"m").as_str()
        );
    }
}
