//! Unit tests of `openstack::client`: the operator's CA file and the catalog's missing services.

use super::*;
use crate::openstack::CloudConfig;

/// A self-signed CA (CN keystone.test), as an operator's cacert would hold.
const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBhzCCAS2gAwIBAgIUMETqTmW/mtRNqy86Y4Dg8ORkGQkwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNa2V5c3RvbmUudGVzdDAgFw0yNjEyMDIxMDU1MzFaGA8yMTI2
MTEwODEwNTUzMVowGDEWMBQGA1UEAwwNa2V5c3RvbmUudGVzdDBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABJoZG1Tlbj6eGgGep8ZfmQ05giFkrC5wcmvgAKenBiP0
4tJcLfZFnC6uzzbHai3nMf1jGbo+/9Zzl7/NWXE7F76jUzBRMB0GA1UdDgQWBBRp
zKfe1x6Zq8zQ8pD5B2a5wVBIoTAfBgNVHSMEGDAWgBRpzKfe1x6Zq8zQ8pD5B2a5
wVBIoTAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCICmEjV9W9Xix
++gYOI9dla3wrfIsUujYmGifih8E29fuAiEArKXnLotKal6dWfsV0yc/jzZr2b91
tYHbA+OFKWOm6Hg=
-----END CERTIFICATE-----
";

fn cloud_with_cacert(cacert: Option<std::path::PathBuf>) -> CloudConfig {
    let mut cloud = CloudConfig::from_lookup(|k| match k {
        "OS_AUTH_URL" => Some("https://keystone.test/v3".to_owned()),
        "OS_APPLICATION_CREDENTIAL_ID" => Some("a".to_owned()),
        "OS_APPLICATION_CREDENTIAL_SECRET" => Some("s".to_owned()),
        _ => None,
    })
    .unwrap();
    cloud.cacert = cacert;
    cloud
}

#[test]
fn the_client_is_built_with_the_cacert_of_clouds_yaml_and_refuses_a_bad_one() {
    let dir = std::env::temp_dir().join(format!("gsb-cacert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("ca.pem");
    std::fs::write(&good, CA).unwrap();
    let bad = dir.join("not-a-ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let timeout = Duration::from_secs(1);

    assert!(OpenStack::new(cloud_with_cacert(Some(good)), timeout).is_ok());
    let err = OpenStack::new(cloud_with_cacert(Some(bad.clone())), timeout)
        .err()
        .expect("a cacert without a certificate stops the start");
    assert!(err.to_string().contains(&bad.display().to_string()), "{err}");
    let missing = dir.join("missing.pem");
    let err = OpenStack::new(cloud_with_cacert(Some(missing.clone())), timeout)
        .err()
        .expect("a missing cacert stops the start");
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
}

#[test]
fn a_service_missing_from_the_catalog_is_an_error_that_names_it_never_an_empty_answer() {
    let cloud = cloud_with_cacert(None);
    let error = Service::Nova.url_in(None, &cloud).unwrap_err();
    assert!(!error.is_transient());
    assert!(error.to_string().contains("no `compute` endpoint"), "{error}");
    let error = Service::Cinder.url_in(None, &cloud).unwrap_err();
    assert!(error.to_string().contains("`volumev3` or `block-storage`"), "{error}");
    assert_eq!(
        Service::Nova.url_in(Some("http://nova/v2.1"), &cloud),
        Ok("http://nova/v2.1")
    );
}
