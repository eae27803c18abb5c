//! Which workloads read a Secret: the pod template references it through an env var
//! (`valueFrom.secretKeyRef`), `envFrom.secretRef`, a `secret` volume or a `projected` volume
//! source, in any container, init container or ephemeral container.
//!
//! Pure functions over k8s-openapi types; listing the workloads is the caller's job.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Annotation on a workload (Deployment, StatefulSet, DaemonSet, CronJob, Rollout; on the
/// object itself, not its pod template): `"true"` = rdscred never rolls it, even
/// when it references the Secret or is listed explicitly.
pub const OPT_OUT_ANNOTATION: &str = "rdscred.io/ignore";

/// Whether the pod spec reads the Secret `secret_name` (same namespace, as Secret references
/// in a pod always are). References marked `optional` count: the pod still reads the value.
pub fn pod_spec_references_secret(spec: &PodSpec, secret_name: &str) -> bool {
    let env_refs = |env: Option<&Vec<EnvVar>>, env_from: Option<&Vec<EnvFromSource>>| {
        env.into_iter().flatten().any(|e| {
            e.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .is_some_and(|r| r.name == secret_name)
        }) || env_from
            .into_iter()
            .flatten()
            .any(|e| e.secret_ref.as_ref().is_some_and(|r| r.name == secret_name))
    };
    let mut containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let in_containers = containers.any(|c| env_refs(c.env.as_ref(), c.env_from.as_ref()));
    let in_ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .any(|c| env_refs(c.env.as_ref(), c.env_from.as_ref()));
    let in_volumes = spec.volumes.iter().flatten().any(|v| {
        v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(secret_name)
            || v.projected
                .as_ref()
                .and_then(|p| p.sources.as_ref())
                .into_iter()
                .flatten()
                .any(|src| src.secret.as_ref().is_some_and(|s| s.name == secret_name))
    });
    in_containers || in_ephemeral || in_volumes
}

/// Whether the workload carries `rdscred.io/ignore: "true"` (case and surrounding spaces
/// ignored; any other value does not opt out).
pub fn opted_out(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(OPT_OUT_ANNOTATION))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The workload kinds rdscred rolls: access to their pod template.
pub trait PodTemplated {
    fn meta(&self) -> &ObjectMeta;
    fn pod_spec(&self) -> Option<&PodSpec>;
}

macro_rules! pod_templated {
    ($($kind:ty),*) => {$(
        impl PodTemplated for $kind {
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn pod_spec(&self) -> Option<&PodSpec> {
                self.spec.as_ref().and_then(|s| s.template.spec.as_ref())
            }
        }
    )*};
}
pod_templated!(Deployment, StatefulSet, DaemonSet);

/// Auto-discovery: the workload's pod template references the Secret and it has not opted out.
pub fn discovered<W: PodTemplated>(workload: &W, secret_name: &str) -> bool {
    !opted_out(workload.meta())
        && workload
            .pod_spec()
            .is_some_and(|s| pod_spec_references_secret(s, secret_name))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::{DaemonSetSpec, DeploymentSpec, StatefulSetSpec};
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, ConfigMapProjection, ConfigMapVolumeSource,
        Container, EnvVarSource, EphemeralContainer, LocalObjectReference, PodTemplateSpec,
        ProjectedVolumeSource, SecretEnvSource, SecretKeySelector, SecretProjection,
        SecretVolumeSource, Volume, VolumeProjection,
    };

    use super::*;

    const NAME: &str = "app-db";

    fn container(env: Vec<EnvVar>, env_from: Vec<EnvFromSource>) -> Container {
        Container {
            name: "c".into(),
            env: Some(env),
            env_from: Some(env_from),
            ..Default::default()
        }
    }

    fn env_secret(secret: &str) -> EnvVar {
        EnvVar {
            name: "DB_PASSWORD".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.into(),
                    key: "password".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn env_from_secret(secret: &str) -> EnvFromSource {
        EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret.into(),
                optional: Some(true),
            }),
            ..Default::default()
        }
    }

    fn secret_volume(secret: &str) -> Volume {
        Volume {
            name: "db".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn projected_volume(secret: &str) -> Volume {
        Volume {
            name: "bundle".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: secret.into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        secret: Some(SecretProjection {
                            name: secret.into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn spec_with_container(c: Container) -> PodSpec {
        PodSpec {
            containers: vec![c],
            ..Default::default()
        }
    }

    #[test]
    fn env_value_from_in_each_container_kind() {
        let c = container(vec![env_secret(NAME)], vec![]);
        assert!(pod_spec_references_secret(
            &spec_with_container(c.clone()),
            NAME
        ));
        let init = PodSpec {
            containers: vec![Container::default()],
            init_containers: Some(vec![c]),
            ..Default::default()
        };
        assert!(pod_spec_references_secret(&init, NAME));
        let eph = PodSpec {
            containers: vec![Container::default()],
            ephemeral_containers: Some(vec![EphemeralContainer {
                name: "debug".into(),
                env: Some(vec![env_secret(NAME)]),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(pod_spec_references_secret(&eph, NAME));
    }

    #[test]
    fn env_from_in_each_container_kind() {
        let c = container(vec![], vec![env_from_secret(NAME)]);
        assert!(pod_spec_references_secret(
            &spec_with_container(c.clone()),
            NAME
        ));
        let init = PodSpec {
            init_containers: Some(vec![c]),
            ..Default::default()
        };
        assert!(pod_spec_references_secret(&init, NAME));
        let eph = PodSpec {
            ephemeral_containers: Some(vec![EphemeralContainer {
                name: "debug".into(),
                env_from: Some(vec![env_from_secret(NAME)]),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(pod_spec_references_secret(&eph, NAME));
    }

    #[test]
    fn volumes() {
        let secret = PodSpec {
            volumes: Some(vec![secret_volume(NAME)]),
            ..Default::default()
        };
        assert!(pod_spec_references_secret(&secret, NAME));
        let projected = PodSpec {
            volumes: Some(vec![projected_volume(NAME)]),
            ..Default::default()
        };
        assert!(pod_spec_references_secret(&projected, NAME));
    }

    #[test]
    fn negative_cases() {
        // Other Secrets, in every style.
        let other = PodSpec {
            containers: vec![container(
                vec![env_secret("other")],
                vec![env_from_secret("other")],
            )],
            init_containers: Some(vec![container(vec![env_secret("app-db-2")], vec![])]),
            volumes: Some(vec![secret_volume("app"), projected_volume("other")]),
            ..Default::default()
        };
        assert!(!pod_spec_references_secret(&other, NAME));
        // Same name, but a ConfigMap, an image pull secret or a plain value.
        let lookalikes = PodSpec {
            containers: vec![container(
                vec![
                    EnvVar {
                        name: NAME.into(),
                        value: Some(NAME.into()),
                        ..Default::default()
                    },
                    EnvVar {
                        name: "X".into(),
                        value_from: Some(EnvVarSource {
                            config_map_key_ref: Some(ConfigMapKeySelector {
                                name: NAME.into(),
                                key: "k".into(),
                                optional: None,
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ],
                vec![EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: NAME.into(),
                        optional: None,
                    }),
                    ..Default::default()
                }],
            )],
            image_pull_secrets: Some(vec![LocalObjectReference { name: NAME.into() }]),
            volumes: Some(vec![Volume {
                name: NAME.into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: NAME.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(!pod_spec_references_secret(&lookalikes, NAME));
        // Empty spec, secret volume without a name.
        assert!(!pod_spec_references_secret(&PodSpec::default(), NAME));
        let unnamed = PodSpec {
            volumes: Some(vec![Volume {
                name: "v".into(),
                secret: Some(SecretVolumeSource::default()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(!pod_spec_references_secret(&unnamed, NAME));
        // Exact match only: no prefix or case folding.
        let case = PodSpec {
            volumes: Some(vec![secret_volume("App-DB")]),
            ..Default::default()
        };
        assert!(!pod_spec_references_secret(&case, NAME));
    }

    fn meta(annotation: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("w".into()),
            annotations: annotation
                .map(|v| BTreeMap::from([(OPT_OUT_ANNOTATION.to_string(), v.to_string())])),
            ..Default::default()
        }
    }

    #[test]
    fn opt_out_annotation() {
        assert!(opted_out(&meta(Some("true"))));
        assert!(opted_out(&meta(Some(" TRUE "))));
        assert!(!opted_out(&meta(Some("false"))));
        assert!(!opted_out(&meta(Some(""))));
        assert!(!opted_out(&meta(Some("yes"))));
        assert!(!opted_out(&meta(None)));
        let other = ObjectMeta {
            annotations: Some(BTreeMap::from([(
                "rdscred.io/ignored".to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        };
        assert!(!opted_out(&other));
    }

    fn template(spec: PodSpec) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(spec),
        }
    }

    #[test]
    fn each_workload_kind() {
        let reads = PodSpec {
            volumes: Some(vec![secret_volume(NAME)]),
            ..Default::default()
        };
        let d = Deployment {
            metadata: meta(None),
            spec: Some(DeploymentSpec {
                template: template(reads.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = StatefulSet {
            metadata: meta(None),
            spec: Some(StatefulSetSpec {
                template: template(reads.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ds = DaemonSet {
            metadata: meta(Some("true")),
            spec: Some(DaemonSetSpec {
                template: template(reads),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(discovered(&d, NAME));
        assert!(discovered(&s, NAME));
        assert!(!discovered(&ds, NAME), "opted out");
        assert!(!discovered(&d, "other"));
        assert!(!discovered(&Deployment::default(), NAME), "no spec");
    }
}
