//! Request bodies: content type and encoding checks, the size limit before and after
//! decompression (counted while decompressing, so a bomb is stopped before the memory is taken).

use std::io::Read;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use crate::config::Limits;
use crate::error::ApiError;

/// Read a JSON request body within `limits`, decompressing gzip or zstd.
pub async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limits: &Limits,
) -> Result<Bytes, ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::unsupported_media(format!(
            "content type must be application/json, not {content_type:?}"
        )));
    }
    let encoding = headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let decoder = match encoding.as_deref() {
        None | Some("identity") | Some("") => Decoder::Identity,
        Some("gzip") => Decoder::Gzip,
        Some("zstd") => Decoder::Zstd,
        Some(other) => {
            return Err(ApiError::unsupported_media(format!(
                "content encoding {other:?} is not supported; use gzip or zstd"
            )));
        }
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return Err(too_large(limits.max_body));
    }
    let collected = tokio::time::timeout(
        limits.body_read_timeout,
        Limited::new(body, limits.max_body).collect(),
    )
    .await
    .map_err(|_| {
        ApiError::request_timeout(format!(
            "the body did not arrive within {} s",
            limits.body_read_timeout.as_secs_f64()
        ))
    })?;
    let raw = collected
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large(limits.max_body)
            } else {
                ApiError::invalid_body(format!("reading the body failed: {e}"))
            }
        })?
        .to_bytes();
    match decoder {
        Decoder::Identity => Ok(raw),
        Decoder::Gzip => inflate(flate2::read::MultiGzDecoder::new(&raw[..]), "gzip", limits),
        Decoder::Zstd => {
            let reader = zstd::stream::read::Decoder::new(&raw[..])
                .map_err(|e| ApiError::invalid_body(format!("invalid zstd body: {e}")))?;
            inflate(reader, "zstd", limits)
        }
    }
}

enum Decoder {
    Identity,
    Gzip,
    Zstd,
}

fn too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!("the body is larger than {limit} bytes"))
}

/// Decompress, reading at most one byte past the limit.
fn inflate(reader: impl Read, name: &str, limits: &Limits) -> Result<Bytes, ApiError> {
    let cap = limits.max_decompressed as u64 + 1;
    let mut out = Vec::new();
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::invalid_body(format!("invalid {name} body: {e}")))?;
    if out.len() > limits.max_decompressed {
        return Err(ApiError::too_large(format!(
            "the body decompresses past {} bytes",
            limits.max_decompressed
        )));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::io::Write;

    fn headers(ct: &str, enc: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        if let Some(enc) = enc {
            h.insert(CONTENT_ENCODING, HeaderValue::from_str(enc).unwrap());
        }
        h
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[tokio::test]
    async fn limits_types_and_encodings() {
        let limits = Limits {
            max_body: 1_000,
            max_decompressed: 10_000,
            ..Limits::default()
        };
        let ok = read_json(
            &headers("application/json; charset=utf-8", None),
            Body::from("{}"),
            &limits,
        )
        .await;
        assert_eq!(ok.unwrap(), Bytes::from("{}"));
        let status = |r: Result<Bytes, ApiError>| r.unwrap_err().status().as_u16();
        assert_eq!(
            status(read_json(&headers("text/plain", None), Body::from("{}"), &limits).await),
            415
        );
        assert_eq!(
            status(
                read_json(
                    &headers("application/json", Some("br")),
                    Body::from("{}"),
                    &limits
                )
                .await
            ),
            415
        );
        assert_eq!(
            status(
                read_json(
                    &headers("application/json", None),
                    Body::from(vec![b' '; 1001]),
                    &limits
                )
                .await
            ),
            413
        );
        assert_eq!(
            status(
                read_json(
                    &headers("application/json", Some("gzip")),
                    Body::from("not gzip"),
                    &limits
                )
                .await
            ),
            400
        );
        // A bomb: small on the wire, large inflated.
        let bomb = gzip(&vec![b' '; 20_000]);
        assert!(bomb.len() < 1_000);
        assert_eq!(
            status(
                read_json(
                    &headers("application/json", Some("gzip")),
                    Body::from(bomb),
                    &limits
                )
                .await
            ),
            413
        );
        let fine = gzip(b"{\"events\": []}");
        assert_eq!(
            read_json(
                &headers("application/json", Some("gzip")),
                Body::from(fine),
                &limits
            )
            .await
            .unwrap(),
            Bytes::from("{\"events\": []}")
        );
        let z = zstd::encode_all(&b"{}"[..], 1).unwrap();
        assert_eq!(
            read_json(
                &headers("application/json", Some("zstd")),
                Body::from(z),
                &limits
            )
            .await
            .unwrap(),
            Bytes::from("{}")
        );
    }
}
