//! The image documents of a build, assembled from what the earlier phases produced:
//! config (runtime settings, history, diff_ids), build record and manifest. Pure
//! functions, no I/O, so each rule is tested on its own.
use crate::oci::{Descriptor, Digest, History, ImageConfig, Manifest, MediaType, RootFs};
use crate::pipeline::{LayerSummary, PurgeMode, TOOL_VERSION};
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
        if !img.build_args.contains(k) {
            bail!(
                "--build-arg {k}: the recipe does not accept it (accepted: {})",
                if img.build_args.is_empty() {
                    "none".into()
                } else {
                    img.build_args.join(", ")
                }
            );
        }
        run.labels
            .insert(format!("dev.nemoclaw.build-arg.{k}"), v.clone());
    }
    Ok(config)
}

/// The `created_by` of the layers this tool adds (None: no such layer).
pub struct NewLayers {
    pub recipe: Option<String>,
    pub artifacts: Option<String>,
}

impl NewLayers {
    pub fn describe(
        recipe: &Recipe,
        purge_mode: PurgeMode,
        recipe_layer: bool,
        artifacts: Option<Option<&Digest>>,
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
            artifacts: artifacts.map(|d| {
                format!(
                    "nemoclaw-build {TOOL_VERSION}: artifacts {}",
                    d.map(Digest::as_str).unwrap_or_default()
                )
            }),
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
    pub init_target: &'a str,
}

/// The build record: every input needed to rebuild the same bytes.
pub fn record(opts: &crate::pipeline::BuildOptions, inputs: RecordInputs) -> Result<BuildRecord> {
    Ok(BuildRecord {
        artifacts_digest: inputs.artifacts_digest,
        base: Some(inputs.base_name.to_string()),
        base_digest: inputs.base_digest,
        build_args: opts.build_args.clone(),
        compression: Some(opts.compression.describe()),
        init: Some(InitRecord {
            digest: Digest::of(crate::steps::INIT_BINARY),
            target: inputs.init_target.to_string(),
        }),
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
