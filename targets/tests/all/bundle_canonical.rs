//! Canonical manifests round-trip: any well-formed manifest (strings with quotes, control
//! characters, non-ASCII, any integers) encodes to bytes that decode to the same manifest
//! and pass the canonical check; and re-encoding is stable.


use aegis_targets::bundle::*;
use crate::bundle_support::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn manifests_round_trip(
        description in "\\PC*|[\\x00-\\x1f\"\\\\/]{0,8}",
        version in "[ -~]{0,12}",
        argv in proptest::collection::vec(".{0,6}", 0..3),
        serial in any::<u64>(),
        issued_at in 0u64..u64::MAX / 2,
        files in proptest::collection::btree_map("[a-z0-9][a-z0-9._-]{0,10}", proptest::collection::vec(any::<u8>(), 0..40), 0..5),
    ) {
        let mut f = fields("agent-1", serial);
        f.issued_at = issued_at;
        f.expires_at = Some(issued_at + 1);
        f.compiler.version = version;
        f.entrypoint = Some(argv);
        f.parameters.insert("P".into(), LaunchParameter { description });
        let mut w = BundleWriter::new(f);
        for (n, b) in &files {
            if n.contains("..") || n == "manifest.json" || n == "manifest.json.minisig" {
                continue;
            }
            w.add(n.clone(), b.clone()).unwrap();
        }
        let c = w.build(None).unwrap();
        let bytes = &c.files()[MANIFEST_FILE];
        let back = Manifest::from_bytes(bytes).unwrap();
        prop_assert_eq!(&back, c.manifest());
        prop_assert_eq!(&back.to_canonical_bytes().unwrap(), bytes);
    }
}
