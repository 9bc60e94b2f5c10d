//! `rgrid-mount retention apply`: gives every object under a prefix a tier. Objects
//! written by other tools get the default tier; with `--keep-latest N`, the objects of
//! the N newest executions (by their newest object) are marked `latest`, which no tier
//! rule deletes, and those of executions that fell out of the N return to the tier they
//! had. Run again and again (the systemd timer does): each run changes only what is off.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;

use super::{Tier, RETURN_TAG, TIER_TAG};
use crate::artifact;
use crate::object::{ObjectClient, ObjectError, ObjectMeta, Tags};

/// Tagging requests in flight at once.
const CONCURRENCY: usize = 8;

/// What a run is to do.
#[derive(Debug, Clone)]
pub struct ApplyPlan {
    /// Keys it looks at.
    pub prefix: String,
    /// The tier of objects that have none.
    pub default: Tier,
    /// Executions kept whatever their age, newest first. `None` leaves the `latest`
    /// marks as they are (a run that only tags new objects must not end a keep).
    pub keep_latest: Option<usize>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Objects looked at.
    pub objects: usize,
    /// Objects without a tier that got the default.
    pub tiered: usize,
    /// Objects marked `latest`.
    pub kept: usize,
    /// Objects no longer among the latest, back on their tier.
    pub returned: usize,
    /// The executions kept.
    pub latest: Vec<String>,
    /// Objects whose tags could not be changed, with why.
    pub failed: Vec<(String, String)>,
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} objects looked at", self.objects)?;
        writeln!(f, "{} objects without a tier got the default", self.tiered)?;
        if !self.latest.is_empty() {
            let latest = self.latest.join(", ");
            writeln!(f, "{} objects kept as latest ({latest})", self.kept)?;
        }
        writeln!(f, "{} objects returned to their tier", self.returned)?;
        for (key, why) in &self.failed {
            writeln!(f, "failed: {key}: {why}")?;
        }
        Ok(())
    }
}

/// The change an object's tags need, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Tier,
    Keep,
    Return,
}

/// Runs `plan` over the bucket.
pub async fn apply(
    client: Arc<dyn ObjectClient>,
    plan: &ApplyPlan,
) -> Result<ApplyReport, ObjectError> {
    let objects = walk(client.as_ref(), &plan.prefix).await?;
    let latest = plan.keep_latest.map(|n| latest_executions(&objects, n));
    let outcomes: Vec<_> = futures::stream::iter(objects.iter())
        .map(|object| {
            let client = client.clone();
            let is_latest = latest
                .as_ref()
                .map(|latest| execution(&object.key).is_some_and(|e| latest.contains(&e)));
            async move {
                let outcome = retag(client.as_ref(), &object.key, plan.default, is_latest).await;
                (object.key.clone(), outcome)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut report = ApplyReport {
        objects: objects.len(),
        latest: latest.iter().flatten().map(|e| e.to_string()).collect(),
        ..ApplyReport::default()
    };
    for (key, outcome) in outcomes {
        match outcome {
            Ok(Some(Change::Tier)) => report.tiered += 1,
            Ok(Some(Change::Keep)) => report.kept += 1,
            Ok(Some(Change::Return)) => report.returned += 1,
            Ok(None) | Err(ObjectError::NotFound { .. }) => {}
            Err(e) => report.failed.push((key, e.to_string())),
        }
    }
    report.failed.sort();
    Ok(report)
}

fn execution(key: &str) -> Option<&str> {
    artifact::execution_of(key).map(|(id, _)| id)
}

/// The `n` executions whose newest object is newest, newest first.
fn latest_executions(objects: &[ObjectMeta], n: usize) -> Vec<&str> {
    let mut newest: HashMap<&str, SystemTime> = HashMap::new();
    for object in objects {
        if let Some(id) = execution(&object.key) {
            let at = newest.entry(id).or_insert(object.last_modified);
            *at = (*at).max(object.last_modified);
        }
    }
    let mut order: Vec<(&str, SystemTime)> = newest.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    order.into_iter().take(n).map(|(id, _)| id).collect()
}

/// Every object under `prefix`, walking the delimited listing.
async fn walk(client: &dyn ObjectClient, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
    let mut objects = Vec::new();
    let mut prefixes = BTreeSet::from([prefix.to_owned()]);
    while let Some(prefix) = prefixes.pop_first() {
        let mut token = None;
        loop {
            let page = client.list_page(&prefix, token.as_deref(), None).await?;
            objects.extend(page.objects);
            prefixes.extend(page.prefixes.into_iter().filter(|p| p.len() > prefix.len()));
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
    }
    Ok(objects)
}

/// The tags `tags` should become, and the change that is, if any. `is_latest`: whether
/// the object is of a latest execution, `None` when no keep is asked for.
fn wanted(mut tags: Tags, default: Tier, is_latest: Option<bool>) -> Option<(Tags, Change)> {
    let tier = Tier::of(&tags);
    let change = match (tier, is_latest) {
        (Some(_), None) => return None,
        (Some(Tier::Keep | Tier::Latest), Some(true)) => return None,
        (Some(Tier::Latest), Some(false)) => {
            let back = tags.get(RETURN_TAG).and_then(|t| Tier::from_tag(t));
            let back = back.filter(|t| *t != Tier::Latest).unwrap_or(default);
            tags.insert(TIER_TAG.into(), back.tag_value());
            tags.remove(RETURN_TAG);
            Change::Return
        }
        (tier, Some(true)) => {
            let back = tier.unwrap_or(default);
            tags.insert(RETURN_TAG.into(), back.tag_value());
            tags.insert(TIER_TAG.into(), Tier::Latest.tag_value());
            Change::Keep
        }
        (None, _) => {
            tags.insert(TIER_TAG.into(), default.tag_value());
            Change::Tier
        }
        (Some(_), Some(false)) => return None,
    };
    Some((tags, change))
}

/// Reads the tags of `key` and writes them back changed, if they need it.
async fn retag(
    client: &dyn ObjectClient,
    key: &str,
    default: Tier,
    is_latest: Option<bool>,
) -> Result<Option<Change>, ObjectError> {
    let tags = client.tags(key).await?;
    let Some((tags, change)) = wanted(tags, default, is_latest) else {
        return Ok(None);
    };
    client.set_tags(key, tags).await?;
    Ok(Some(change))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{MemoryClient, ObjectHeaders};

    #[tokio::test]
    async fn keep_latest_marks_and_returns() {
        let client = MemoryClient::new();
        for e in ["e1", "e2", "e3"] {
            client.insert(
                &format!("executions/{e}/outputs/a"),
                "x",
                ObjectHeaders::default(),
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let tagged = ObjectHeaders {
            tagging: [(TIER_TAG.to_owned(), "90d".to_owned())].into(),
            ..ObjectHeaders::default()
        };
        client.insert("executions/e3/outputs/b", "x", tagged);
        let client: Arc<dyn ObjectClient> = Arc::new(client.clone());
        let plan = ApplyPlan {
            prefix: "executions/".into(),
            default: Tier::Days(30),
            keep_latest: Some(2),
        };
        let report = apply(client.clone(), &plan).await.unwrap();
        assert_eq!(report.latest, ["e3", "e2"]);
        assert_eq!((report.objects, report.kept, report.tiered), (4, 3, 1));
        let again = apply(client.clone(), &plan).await.unwrap();
        assert_eq!((again.kept, again.tiered, again.returned), (0, 0, 0));

        let untouched = ApplyPlan {
            keep_latest: None,
            ..plan.clone()
        };
        let report = apply(client.clone(), &untouched).await.unwrap();
        assert_eq!(report.returned, 0, "no keep asked for: the marks stay");
        let none = ApplyPlan {
            keep_latest: Some(0),
            ..plan
        };
        let report = apply(client.clone(), &none).await.unwrap();
        assert_eq!(report.returned, 3);
        let b = client.tags("executions/e3/outputs/b").await.unwrap();
        assert_eq!(b[TIER_TAG], "90d", "back to the tier it had");
        let a = client.tags("executions/e2/outputs/a").await.unwrap();
        assert_eq!(a[TIER_TAG], "30d");
        assert!(!a.contains_key(RETURN_TAG));
    }
}
