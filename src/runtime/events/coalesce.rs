//! Which followed secrets a batch of events is about, one unit of work per secret however many
//! events name it. Pure: the consumer supplies what the credentials follow and does the I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::envelope::{SecretEvent, arn_region, names_in_arn};

/// (region, role to assume): where a secret is read.
pub type Scope = (String, Option<String>);

/// A secret one credential follows.
#[derive(Clone, Debug)]
pub struct Followed<C> {
    pub scope: Scope,
    /// `spec.secret.name` (a name, or an ARN for sync-only).
    pub secret: String,
    /// The secret's ARN when known (status, or metadata seen before).
    pub arn: Option<String>,
    pub credential: C,
}

/// Lookup of followed secrets by every way an event may name them: full ARN, name, and the
/// name inside an ARN. Built per batch from in-memory state: unmanaged secrets cost no call.
pub struct Index<C> {
    entries: Vec<Followed<C>>,
    by_id: HashMap<String, Vec<usize>>,
}

impl<C> Index<C> {
    pub fn new(entries: Vec<Followed<C>>) -> Index<C> {
        let mut by_id: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, f) in entries.iter().enumerate() {
            let mut keys: BTreeSet<&str> = BTreeSet::new();
            for id in std::iter::once(f.secret.as_str()).chain(f.arn.as_deref()) {
                keys.insert(id);
                keys.extend(names_in_arn(id));
            }
            for key in keys {
                by_id.entry(key.to_string()).or_default().push(i);
            }
        }
        Index { entries, by_id }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entry(&self, i: usize) -> &Followed<C> {
        &self.entries[i]
    }

    /// The followed secrets `event` may be about, in its region.
    fn lookup(&self, event: &SecretEvent) -> BTreeSet<usize> {
        let region = event
            .ids
            .iter()
            .find_map(|id| arn_region(id))
            .or(event.region.as_deref());
        let mut hits = BTreeSet::new();
        for id in &event.ids {
            let exact = self.by_id.get(id.as_str()).into_iter().flatten();
            let by_name = names_in_arn(id)
                .into_iter()
                .filter_map(|n| self.by_id.get(n))
                .flatten();
            hits.extend(exact.chain(by_name).copied());
        }
        hits.retain(|&i| region.is_none_or(|r| self.entries[i].scope.0 == r));
        hits
    }
}

/// One secret to look at, for all the events of a batch that name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Work {
    pub scope: Scope,
    /// What to DescribeSecret: the ARN when known, else the name the credential gives.
    pub secret_id: String,
    /// Index entries (credentials) following it.
    pub followers: Vec<usize>,
    /// Messages (positions in the batch) that named it.
    pub messages: Vec<usize>,
    /// The earliest event time among them: the start of the end-to-end lag.
    pub earliest: Option<jiff::Timestamp>,
    /// The latest event time among them; `None` if any event has no time.
    pub latest: Option<jiff::Timestamp>,
    /// Set when every event is a `Secret Label Updated` of AWSCURRENT to this one version:
    /// if AWSCURRENT is already known to be it, there is nothing to re-read.
    pub claimed_current: Option<String>,
}

/// How far a re-read must start after an event's `time` to be sure it saw the change: the
/// time is truncated to the second, and AWS's clock and ours may differ a little (EKS nodes
/// sync with the Amazon Time Sync Service, well under a second).
pub const READ_AFTER_EVENT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether a re-read that started at `read_started` (our clock) already reflects every event
/// of `work`, so a later batch naming the same secret needs no new DescribeSecret.
pub fn covered(work: &Work, read_started: Option<jiff::Timestamp>) -> bool {
    match (work.latest, read_started) {
        (Some(latest), Some(read)) => {
            latest + jiff::SignedDuration::try_from(READ_AFTER_EVENT).expect("small") <= read
        }
        _ => false,
    }
}

/// What a batch amounts to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub work: Vec<Work>,
    /// Messages about secrets no credential follows.
    pub unmanaged: Vec<usize>,
}

/// Groups `events` (message position, event) by followed secret.
pub fn coalesce<C>(index: &Index<C>, events: &[(usize, SecretEvent)]) -> Plan {
    let mut plan = Plan::default();
    let mut groups: BTreeMap<(Scope, String), Work> = BTreeMap::new();
    // Versions claimed per group; `None` in the set: an event that claims nothing.
    let mut claims: BTreeMap<(Scope, String), BTreeSet<Option<String>>> = BTreeMap::new();
    for (message, event) in events {
        let hits = index.lookup(event);
        if hits.is_empty() {
            plan.unmanaged.push(*message);
            continue;
        }
        for i in hits {
            let f = &index.entries[i];
            let id = f.arn.clone().unwrap_or_else(|| f.secret.clone());
            let key = (f.scope.clone(), id.clone());
            let work = groups.entry(key.clone()).or_insert_with(|| Work {
                scope: f.scope.clone(),
                secret_id: id,
                followers: Vec::new(),
                messages: Vec::new(),
                earliest: None,
                latest: event.time,
                claimed_current: None,
            });
            if !work.followers.contains(&i) {
                work.followers.push(i);
            }
            if !work.messages.contains(message) {
                work.messages.push(*message);
            }
            work.earliest = match (work.earliest, event.time) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            work.latest = work.latest.zip(event.time).map(|(a, b)| a.max(b));
            claims
                .entry(key)
                .or_default()
                .insert(event.current_version.clone());
        }
    }
    for (key, mut work) in groups {
        let claimed = &claims[&key];
        if claimed.len() == 1 {
            work.claimed_current = claimed.iter().next().cloned().flatten();
        }
        plan.work.push(work);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::super::envelope::DetailType;
    use super::*;

    const ACCOUNT: &str = "123456789012";

    fn arn(region: &str, name: &str) -> String {
        format!("arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{name}-AbC123")
    }

    fn scope(region: &str) -> Scope {
        (region.to_string(), None)
    }

    fn followed(
        region: &str,
        secret: &str,
        arn: Option<String>,
        cred: &'static str,
    ) -> Followed<&'static str> {
        Followed {
            scope: scope(region),
            secret: secret.into(),
            arn,
            credential: cred,
        }
    }

    fn ev(ids: &[&str], region: &str, second: i64, version: Option<&str>) -> SecretEvent {
        SecretEvent {
            detail_type: if version.is_some() {
                DetailType::LabelUpdated
            } else {
                DetailType::ApiCall
            },
            ids: ids.iter().map(|s| s.to_string()).collect(),
            region: Some(region.into()),
            time: Some(jiff::Timestamp::from_second(1_700_000_000 + second).unwrap()),
            current_version: version.map(str::to_string),
        }
    }

    fn index() -> Index<&'static str> {
        Index::new(vec![
            // 0: managed, ARN known from status.
            followed(
                "us-east-1",
                "rdscred/db/app",
                Some(arn("us-east-1", "rdscred/db/app")),
                "ns/app",
            ),
            // 1, 2: two sync-only credentials following the RDS master secret by name.
            followed("us-east-1", "rds!db-0abc", None, "ns/a"),
            followed("us-east-1", "rds!db-0abc", None, "other/b"),
            // 3: the same name in another region.
            followed("eu-west-1", "rdscred/db/app", None, "eu/app"),
            // 4: sync-only, spec names the secret by ARN.
            followed("us-east-1", &arn("us-east-1", "ext"), None, "ns/ext"),
        ])
    }

    fn work_for<'a>(plan: &'a Plan, secret_id: &str) -> &'a Work {
        plan.work
            .iter()
            .find(|w| w.secret_id == secret_id)
            .unwrap_or_else(|| panic!("no work for {secret_id}: {plan:?}"))
    }

    #[test]
    fn events_find_their_secret_by_arn_name_or_partial_arn_in_their_region() {
        let idx = index();
        let app_arn = arn("us-east-1", "rdscred/db/app");
        let cases: Vec<(&str, SecretEvent, Vec<usize>)> = vec![
            ("full ARN", ev(&[&app_arn], "us-east-1", 0, None), vec![0]),
            (
                "name",
                ev(&["rdscred/db/app"], "us-east-1", 0, None),
                vec![0],
            ),
            (
                "partial ARN",
                ev(
                    &["arn:aws:secretsmanager:us-east-1:123456789012:secret:rdscred/db/app"],
                    "us-east-1",
                    0,
                    None,
                ),
                vec![0],
            ),
            (
                "name, other region",
                ev(&["rdscred/db/app"], "eu-west-1", 0, None),
                vec![3],
            ),
            (
                "ARN of the other region wins over the envelope region",
                ev(&[&arn("eu-west-1", "rdscred/db/app")], "us-east-1", 0, None),
                vec![3],
            ),
            (
                "shared by two credentials",
                ev(&["rds!db-0abc"], "us-east-1", 0, None),
                vec![1, 2],
            ),
            (
                "the full ARN of a secret followed by name",
                ev(&[&arn("us-east-1", "rds!db-0abc")], "us-east-1", 0, None),
                vec![1, 2],
            ),
            (
                "spec names the ARN, event the name",
                ev(&["ext"], "us-east-1", 0, None),
                vec![4],
            ),
            (
                "unmanaged",
                ev(&["someone/else"], "us-east-1", 0, None),
                vec![],
            ),
            (
                "unmanaged ARN",
                ev(&[&arn("us-east-1", "someone/else")], "us-east-1", 0, None),
                vec![],
            ),
            (
                "prefix of a followed name",
                ev(&["rdscred/db"], "us-east-1", 0, None),
                vec![],
            ),
        ];
        for (what, event, want) in cases {
            let got: Vec<usize> = idx.lookup(&event).into_iter().collect();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn a_batch_becomes_one_unit_of_work_per_secret() {
        let idx = index();
        let app_arn = arn("us-east-1", "rdscred/db/app");
        let events = vec![
            (
                0,
                ev(&[&app_arn, "rdscred/db/app"], "us-east-1", 5, Some("v2")),
            ),
            (1, ev(&["rdscred/db/app"], "us-east-1", 3, None)),
            (2, ev(&[&app_arn], "us-east-1", 9, Some("v2"))),
            (3, ev(&["rds!db-0abc"], "us-east-1", 7, Some("m1"))),
            (4, ev(&["nobody"], "us-east-1", 1, None)),
            (
                5,
                ev(
                    &[&arn("us-east-1", "rds!db-0abc")],
                    "us-east-1",
                    8,
                    Some("m1"),
                ),
            ),
            (6, ev(&["ext"], "us-east-1", 2, Some("x1"))),
            (7, ev(&["ext"], "us-east-1", 4, Some("x2"))),
        ];
        let plan = coalesce(&idx, &events);
        assert_eq!(plan.unmanaged, vec![4]);
        assert_eq!(plan.work.len(), 3, "{plan:?}");

        let app = work_for(&plan, &app_arn);
        assert_eq!(app.followers, vec![0]);
        assert_eq!(app.messages, vec![0, 1, 2]);
        assert_eq!(
            app.earliest,
            Some(jiff::Timestamp::from_second(1_700_000_003).unwrap())
        );
        assert_eq!(
            app.claimed_current, None,
            "a CloudTrail event claims no version"
        );

        let master = work_for(&plan, "rds!db-0abc");
        assert_eq!(
            master.followers,
            vec![1, 2],
            "one describe for both credentials"
        );
        assert_eq!(master.messages, vec![3, 5]);
        assert_eq!(master.claimed_current.as_deref(), Some("m1"));

        let ext = work_for(&plan, &arn("us-east-1", "ext"));
        assert_eq!(ext.claimed_current, None, "two versions claimed: re-read");
    }

    #[test]
    fn burst_of_many_events_is_one_work_item_per_secret() {
        let followed: Vec<Followed<&'static str>> = (0..50)
            .map(|i| {
                let name: &'static str = Box::leak(format!("rdscred/db/s{i}").into_boxed_str());
                Followed {
                    scope: scope("us-east-1"),
                    secret: name.into(),
                    arn: Some(arn("us-east-1", name)),
                    credential: name,
                }
            })
            .collect();
        let idx = Index::new(followed);
        let events: Vec<(usize, SecretEvent)> = (0..500)
            .map(|m| {
                let name = format!("rdscred/db/s{}", m % 50);
                let id = if m % 2 == 0 {
                    arn("us-east-1", &name)
                } else {
                    name
                };
                (m, ev(&[&id], "us-east-1", m as i64, None))
            })
            .collect();
        let plan = coalesce(&idx, &events);
        assert_eq!(plan.work.len(), 50);
        assert!(plan.unmanaged.is_empty());
        assert!(plan.work.iter().all(|w| w.messages.len() == 10));
        let mut all: Vec<usize> = plan.work.iter().flat_map(|w| w.messages.clone()).collect();
        all.sort();
        assert_eq!(
            all,
            (0..500).collect::<Vec<_>>(),
            "every message in exactly one unit"
        );
    }

    #[test]
    fn a_read_covers_events_only_well_before_it_started() {
        let idx = index();
        let at = |second: i64| Some(jiff::Timestamp::from_second(1_700_000_000 + second).unwrap());
        let plan = coalesce(
            &idx,
            &[
                (0, ev(&["rdscred/db/app"], "us-east-1", 0, None)),
                (1, ev(&["rdscred/db/app"], "us-east-1", 10, None)),
            ],
        );
        let work = &plan.work[0];
        assert_eq!(work.latest, at(10));
        let cases = [
            (None, false, "never read"),
            (at(12), false, "read within the margin of the latest event"),
            (at(13), true, "read three seconds after the latest event"),
            (at(100), true, "read long after"),
        ];
        for (read, want, what) in cases {
            assert_eq!(covered(work, read), want, "{what}");
        }
        let mut untimed = ev(&["rdscred/db/app"], "us-east-1", 0, None);
        untimed.time = None;
        let plan = coalesce(
            &idx,
            &[
                (0, ev(&["rdscred/db/app"], "us-east-1", 0, None)),
                (1, untimed),
            ],
        );
        assert_eq!(plan.work[0].latest, None);
        assert!(
            !covered(&plan.work[0], at(100)),
            "an event without a time is never covered"
        );
    }

    #[test]
    fn empty_index_makes_everything_unmanaged() {
        let idx: Index<&str> = Index::new(Vec::new());
        assert!(idx.is_empty());
        let plan = coalesce(&idx, &[(0, ev(&["x"], "us-east-1", 0, None))]);
        assert_eq!(plan.unmanaged, vec![0]);
        assert!(plan.work.is_empty());
    }
}
