//! The pull query string: `after`, `limit`, `aggregate_id`, `kind`, parsed strictly.

use synckit_types::{
    AggregateId, Error, Filter, MAX_PAGE_SIZE, ReadRequest, Result, Seq, parse_u64,
};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 500;

/// Parse the query string of `GET /v1/events` (without the `?`).
///
/// `after` defaults to 0 and `limit` to 500 (1 to 5,000); both are plain decimal digits.
/// `aggregate_id` may appear once; `kind` may repeat (any of them matches). Unknown parameters
/// are ignored so that later versions can add some; a repeated `after`, `limit` or
/// `aggregate_id` is an error. Every error is `InvalidInput` and names the parameter.
pub fn parse_pull_query(query: &str) -> Result<ReadRequest> {
    let mut after = None;
    let mut limit = None;
    let mut filter = Filter::all();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "after" => {
                once(&key, after.is_some())?;
                after = Some(Seq(parse_u64("after", &value)?));
            }
            "limit" => {
                once(&key, limit.is_some())?;
                let n = parse_u64("limit", &value)?;
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n == 0 || n > MAX_PAGE_SIZE {
                    return Err(Error::invalid_input(format!(
                        "limit {n} is out of range 1..={MAX_PAGE_SIZE}"
                    )));
                }
                limit = Some(n);
            }
            "aggregate_id" => {
                once(&key, filter.aggregate_id.is_some())?;
                filter.aggregate_id = Some(
                    AggregateId::new(value.as_ref())
                        .map_err(|e| e.context("query parameter aggregate_id"))?,
                );
            }
            "kind" => {
                if value.is_empty() {
                    return Err(Error::invalid_input("query parameter kind is empty"));
                }
                filter.kinds.insert(value.into_owned());
            }
            _ => {}
        }
    }
    Ok(ReadRequest {
        after: after.unwrap_or(Seq::ZERO),
        limit: limit.unwrap_or(DEFAULT_LIMIT),
        filter,
    })
}

fn once(key: &str, seen: bool) -> Result<()> {
    if seen {
        Err(Error::invalid_input(format!(
            "query parameter {key} is given twice"
        )))
    } else {
        Ok(())
    }
}

/// The query string for `request` (without the `?`).
pub fn pull_query_string(request: &ReadRequest) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("after", &request.after.to_string());
    query.append_pair("limit", &request.limit.to_string());
    if let Some(aggregate) = &request.filter.aggregate_id {
        query.append_pair("aggregate_id", aggregate.as_str());
    }
    for kind in &request.filter.kinds {
        query.append_pair("kind", kind);
    }
    query.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_and_values() {
        let r = parse_pull_query("").unwrap();
        assert_eq!((r.after, r.limit), (Seq(0), DEFAULT_LIMIT));
        let r = parse_pull_query("after=12&limit=5000&aggregate_id=task%201&kind=A&kind=B&x=y")
            .unwrap();
        assert_eq!((r.after, r.limit), (Seq(12), 5000));
        assert_eq!(r.filter.aggregate_id.unwrap().as_str(), "task 1");
        assert_eq!(r.filter.kinds.len(), 2);
    }

    #[test]
    fn bad_values_are_rejected_with_the_parameter_named() {
        for (query, name) in [
            ("after=", "after"),
            ("after=-1", "after"),
            ("after=1.5", "after"),
            ("after=12abc", "after"),
            ("after=18446744073709551616", "after"),
            ("limit=0", "limit"),
            ("limit=5001", "limit"),
            ("limit=abc", "limit"),
            ("after=1&after=2", "after"),
            ("aggregate_id=", "aggregate_id"),
            ("kind=", "kind"),
        ] {
            let err = parse_pull_query(query).unwrap_err();
            assert!(err.to_string().contains(name), "{query}: {err}");
        }
    }

    proptest! {
        #[test]
        fn round_trips(after: u64, limit in 1usize..=5000, agg in "[a-z ]{1,10}", kinds in proptest::collection::btree_set("[A-Za-z&=]{1,5}", 0..3)) {
            let request = ReadRequest {
                after: Seq(after),
                limit,
                filter: Filter { aggregate_id: Some(AggregateId::new(agg).unwrap()), kinds },
            };
            prop_assert_eq!(parse_pull_query(&pull_query_string(&request)).unwrap(), request);
        }

        #[test]
        fn never_panics(query in "\\PC*") {
            let _ = parse_pull_query(&query);
        }
    }
}
