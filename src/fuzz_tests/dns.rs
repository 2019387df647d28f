//! Properties of the DNS response parser (`src/discovery/dns.rs`): whatever a server sends,
//! parsing returns (never panics) with bounded output.

use proptest::prelude::*;

use super::config;
use crate::discovery::dns::{
    MAX_EXPANDED, MAX_NAME_LEN, Question, Record, Response, encode_query, parse_response,
};

/// A valid answer: its bytes, the question it answers and its record count. A, AAAA and SRV
/// records owned by the question's name, each compressed (a pointer to it) or written out.
fn dns_answer() -> impl Strategy<Value = (Vec<u8>, u16, String, u16, usize)> {
    let name = prop::collection::vec("[a-zA-Z0-9-]{1,20}", 1..4).prop_map(|l| l.join("."));
    let record = (0u8..3, any::<[u8; 4]>(), any::<bool>());
    (
        any::<u16>(),
        name,
        prop::sample::select(vec![1u16, 28, 33]),
        prop::collection::vec(record, 0..8),
    )
        .prop_map(|(id, name, qtype, records)| {
            let mut m = encode_query(id, &name, qtype).unwrap();
            let qname = m[12..m.len() - 4].to_vec();
            m[2] = 0x81;
            m[3] = 0x80;
            m[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
            for (kind, ip, compressed) in &records {
                if *compressed {
                    m.extend_from_slice(&[0xC0, 12]);
                } else {
                    m.extend_from_slice(&qname);
                }
                let (rtype, rdata): (u16, Vec<u8>) = match kind {
                    0 => (1, ip.to_vec()),
                    1 => (28, ip.repeat(4)),
                    _ => (33, vec![0, 1, 0, 1, ip[0], ip[1], 0xC0, 12]),
                };
                m.extend_from_slice(&rtype.to_be_bytes());
                m.extend_from_slice(&[0, 1, 0, 0, 0, 30]);
                m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                m.extend_from_slice(&rdata);
            }
            (m, id, name, qtype, records.len())
        })
}

/// Parses `m` as an answer to (`id`, `name`, `qtype`) and checks the bounds
/// `parse_response` documents: at most `len / 11` records, names of at most 255 bytes (up to
/// 3 times that as text, bytes that are not UTF-8 becoming U+FFFD) and 512 KiB in all.
fn parse_bounded(
    m: &[u8],
    id: u16,
    name: &str,
    qtype: u16,
) -> Result<Result<Response, String>, TestCaseError> {
    let q = Question { id, name, qtype };
    let r = parse_response(m, &q);
    if let Ok(resp) = &r {
        prop_assert!(resp.records.len() <= m.len() / 11);
        let names = resp.records.iter().flat_map(|rec| match rec {
            Record::A(n, _) => [n.as_str(), ""],
            Record::Srv { name, target, .. } => [name.as_str(), target.as_str()],
        });
        let mut total = 0;
        for n in names {
            prop_assert!(n.len() <= 3 * MAX_NAME_LEN, "{} bytes", n.len());
            total += n.len();
        }
        prop_assert!(total <= 3 * MAX_EXPANDED);
    }
    Ok(r)
}

proptest! {
    #![proptest_config(config())]

    /// Generated answers parse to all their records.
    #[test]
    fn valid_dns_answers_parse((m, id, name, qtype, n) in dns_answer()) {
        let r = parse_bounded(&m, id, &name, qtype)?;
        prop_assert_eq!(r.map(|r| r.records.len()), Ok(n));
    }

    /// A valid answer with bytes overwritten (often with compression pointers), and perhaps
    /// cut short: never a panic, the output bounded.
    #[test]
    fn mutated_dns_answers_never_panic(
        (mut m, id, name, qtype, _) in dns_answer(),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), prop_oneof![any::<u8>(), 0xC0u8..=0xFF, Just(0u8)]),
            1..8,
        ),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        for (at, byte) in edits {
            let i = at.index(m.len());
            m[i] = byte;
        }
        if let Some(cut) = cut {
            m.truncate(cut.index(m.len() + 1));
        }
        let _ = parse_bounded(&m, id, &name, qtype)?;
    }

    /// Any bytes at all; and any bytes after a header and question that pass the checks
    /// (with any record counts), so that the records' parsing is reached.
    #[test]
    fn any_bytes_never_panic_the_dns_parser(
        m in prop::collection::vec(any::<u8>(), 0..2048),
        counts in any::<[u8; 6]>(),
        qtype in prop::sample::select(vec![1u16, 28, 33]),
    ) {
        let id = m.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        let _ = parse_bounded(&m, id, "a", qtype)?;
        let mut framed = encode_query(7, "a", qtype).unwrap();
        framed[2] = 0x81;
        framed[6..12].copy_from_slice(&counts);
        framed.extend_from_slice(&m);
        let _ = parse_bounded(&framed, 7, "a", qtype)?;
    }
}
