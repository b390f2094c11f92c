//! Reading a log: filters, read requests and pages.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::event::{Event, StoredEvent};
use crate::id::AggregateId;
use crate::seq::Seq;

/// Largest page a store or hub hands out in one read.
pub const MAX_PAGE_SIZE: usize = 5_000;

/// Which events a read returns. An empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Filter {
    /// Only events of this aggregate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_id: Option<AggregateId>,
    /// Only events of one of these kinds (empty: any kind).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub kinds: BTreeSet<String>,
}

impl Filter {
    /// The filter that matches every event.
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Only events of `aggregate_id`.
    pub fn aggregate(aggregate_id: AggregateId) -> Filter {
        Filter {
            aggregate_id: Some(aggregate_id),
            kinds: BTreeSet::new(),
        }
    }

    /// Whether this filter matches every event.
    pub fn is_all(&self) -> bool {
        self.aggregate_id.is_none() && self.kinds.is_empty()
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        self.aggregate_id
            .as_ref()
            .is_none_or(|a| *a == event.aggregate_id)
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
    }
}

/// A request for the events after a cursor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadRequest {
    /// Return events with `seq` strictly greater than this.
    pub after: Seq,
    /// At most this many events (1 to [`MAX_PAGE_SIZE`]).
    pub limit: usize,
    /// Which events to return.
    #[serde(default)]
    pub filter: Filter,
}

impl ReadRequest {
    /// Events after `after`, at most `limit` of them, unfiltered.
    pub fn after(after: Seq, limit: usize) -> ReadRequest {
        ReadRequest {
            after,
            limit,
            filter: Filter::all(),
        }
    }

    /// Restrict the request to `filter`.
    pub fn with_filter(mut self, filter: Filter) -> ReadRequest {
        self.filter = filter;
        self
    }

    /// Check the limit is in range.
    pub fn validate(&self) -> Result<()> {
        if self.limit == 0 || self.limit > MAX_PAGE_SIZE {
            return Err(Error::invalid_input(format!(
                "page limit {} is out of range 1..={MAX_PAGE_SIZE}",
                self.limit
            )));
        }
        Ok(())
    }
}

/// One page of a read.
///
/// `next` is the cursor to continue from: every event with `seq <= next` that matches the filter
/// is in this page or an earlier one. With a filter, `next` can be past the last returned event:
/// skipped events count as read. `has_more` is `next < head`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Page {
    /// Matching events with `after < seq <= next`, in `seq` order.
    pub events: Vec<StoredEvent>,
    /// The cursor to pass as `after` for the following page.
    pub next: Seq,
    /// Whether events after `next` existed when the page was read.
    pub has_more: bool,
    /// The tenant's head (highest committed `seq`) when the page was read.
    pub head: Seq,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert!(ReadRequest::after(Seq::ZERO, 0).validate().is_err());
        assert!(
            ReadRequest::after(Seq::ZERO, MAX_PAGE_SIZE + 1)
                .validate()
                .is_err()
        );
        assert!(
            ReadRequest::after(Seq::ZERO, MAX_PAGE_SIZE)
                .validate()
                .is_ok()
        );
    }
}
