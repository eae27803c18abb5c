//! Label selector matching (`matchLabels` + `matchExpressions`) with kube's own
//! [`Selector`], which implements the API server's semantics; this module only decides what
//! a selector the API server would not accept means here.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

/// Whether `labels` match `selector`. An empty selector matches everything; a selector kube
/// cannot parse (an unknown operator, `In`/`NotIn` without values) matches nothing: fail
/// closed, this decides which namespaces are admitted.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_labels_and_expressions() {
        let empty = LabelSelector::default();
        assert!(matches(&empty, &labels(&[])));
        let sel = LabelSelector {
            match_labels: Some(labels(&[("team", "orders")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "In".into(),
                values: Some(vec!["prod".into(), "staging".into()]),
            }]),
        };
        assert!(matches(
            &sel,
            &labels(&[("team", "orders"), ("env", "prod")])
        ));
        assert!(!matches(
            &sel,
            &labels(&[("team", "orders"), ("env", "dev")])
        ));
        assert!(!matches(
            &sel,
            &labels(&[("team", "billing"), ("env", "prod")])
        ));
        let bogus = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Bogus".into(),
                values: None,
            }]),
        };
        assert!(!matches(&bogus, &labels(&[("a", "b")])));
        let not_in = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "NotIn".into(),
                values: Some(vec!["prod".into()]),
            }]),
        };
        assert!(matches(&not_in, &labels(&[])));
        assert!(!matches(&not_in, &labels(&[("env", "prod")])));
        let exists = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "team".into(),
                    operator: "Exists".into(),
                    values: None,
                },
                LabelSelectorRequirement {
                    key: "frozen".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert!(matches(&exists, &labels(&[("team", "x")])));
        assert!(!matches(&exists, &labels(&[("team", "x"), ("frozen", "")])));
        assert!(!matches(&exists, &labels(&[])));
        // `In` without values: the API server rejects it; here it admits nobody.
        let in_without_values = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "In".into(),
                values: None,
            }]),
        };
        assert!(!matches(&in_without_values, &labels(&[("env", "prod")])));
    }
}
