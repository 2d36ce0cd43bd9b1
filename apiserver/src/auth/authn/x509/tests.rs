use super::*;
use crate::auth::authn::testing::{head, Ca};

fn authenticator(ca: &Ca) -> X509Authenticator {
    X509Authenticator::new(CertificateVerifier::from_pem(ca.pem.as_bytes()).expect("CA bundle"))
}

async fn authenticate(
    authn: &X509Authenticator,
    chain: &[CertificateDer<'static>],
) -> Result<Option<UserInfo>> {
    authn.authenticate(&head(&[]), chain).await
}

#[tokio::test]
async fn valid_certificate_names_user_and_groups() {
    let ca = Ca::new("client-ca");
    let cert = ca.client("alice").org("retail-admins").org("sre").issue();
    let user = authenticate(&authenticator(&ca), std::slice::from_ref(&cert))
        .await
        .expect("valid cert")
        .expect("names a user");
    assert_eq!(user.name, "alice");
    assert_eq!(user.uid, "");
    assert_eq!(user.groups, ["retail-admins", "sre"]);
    assert_eq!(user.extra[CREDENTIAL_ID_KEY], [credential_id(&cert)]);
    assert!(user.extra[CREDENTIAL_ID_KEY][0].starts_with("X509SHA256="));
    assert_eq!(
        user.extra[CREDENTIAL_ID_KEY][0].len(),
        "X509SHA256=".len() + 64
    );
}

#[tokio::test]
async fn no_certificate_is_no_opinion() {
    let ca = Ca::new("client-ca");
    assert_eq!(authenticate(&authenticator(&ca), &[]).await.unwrap(), None);
}

#[tokio::test]
async fn certificate_without_common_name_is_no_opinion() {
    let ca = Ca::new("client-ca");
    let cert = ca.client("").org("only-an-org").issue();
    assert_eq!(
        authenticate(&authenticator(&ca), &[cert]).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn expired_certificate_is_rejected() {
    let ca = Ca::new("client-ca");
    let cert = ca.client("alice").expired().issue();
    let err = authenticate(&authenticator(&ca), &[cert])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AuthnError::InvalidClientCertificate { subject, .. } if subject.contains("CN=alice")),
        "{err:?}"
    );
    assert!(err.message().contains("expired"), "{}", err.message());
}

#[tokio::test]
async fn certificate_from_another_ca_is_rejected() {
    let ca = Ca::new("client-ca");
    let other = Ca::new("other-ca");
    let cert = other.client("mallory").org("system:masters").issue();
    let err = authenticate(&authenticator(&ca), &[cert])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuthnError::InvalidClientCertificate { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn server_only_certificate_is_rejected_for_client_auth() {
    let ca = Ca::new("client-ca");
    let cert = ca.client("alice").server_only().issue();
    let err = authenticate(&authenticator(&ca), &[cert])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuthnError::InvalidClientCertificate { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn chain_through_an_intermediate_verifies_when_presented() {
    let root = Ca::new("root-ca");
    let intermediate = root.intermediate("intermediate-ca");
    let leaf = intermediate.client("bob").org("ops").issue();
    let authn = authenticator(&root);

    let user = authenticate(&authn, &[leaf.clone(), intermediate.cert.clone()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (user.name.as_str(), user.groups.as_slice()),
        ("bob", &["ops".to_string()][..])
    );

    // Without the intermediate the chain cannot be built.
    assert!(authenticate(&authn, &[leaf]).await.is_err());
}

#[test]
fn ca_bundle_errors() {
    assert!(matches!(
        CertificateVerifier::from_pem(b""),
        Err(CaBundleError::Empty)
    ));
    assert!(matches!(
        CertificateVerifier::from_pem(b"not pem at all"),
        Err(CaBundleError::Empty)
    ));
    let err = CertificateVerifier::from_pem_file(Path::new("/nonexistent/ca.crt")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.crt"), "{err}");

    // A bundle with two CAs trusts both.
    let (a, b) = (Ca::new("a"), Ca::new("b"));
    let bundle = format!("{}{}", a.pem, b.pem);
    let verifier = CertificateVerifier::from_pem(bundle.as_bytes()).unwrap();
    for ca in [&a, &b] {
        verifier
            .verify(&[ca.client("x").issue()], UnixTime::now())
            .unwrap();
    }
}

#[test]
fn garbage_certificate_is_rejected_not_panicking() {
    let ca = Ca::new("client-ca");
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    let err = authenticator(&ca)
        .authenticate_chain(&[garbage], UnixTime::now())
        .unwrap_err();
    assert!(
        matches!(&err, AuthnError::InvalidClientCertificate { subject, .. } if subject == "<unparsable>"),
        "{err:?}"
    );
}

#[test]
fn a_verified_chain_is_remembered_but_never_past_its_validity() {
    let ca = Ca::new("client-ca");
    let verifier = CertificateVerifier::from_pem(ca.pem.as_bytes()).unwrap();
    let cert = ca.client("alice").issue();
    let chain = std::slice::from_ref(&cert);
    let now = UnixTime::now();
    verifier.verify(chain, now).expect("valid");
    assert_eq!(verifier.remembered_chains(), 1);
    verifier.verify(chain, now).expect("still valid");
    assert_eq!(verifier.remembered_chains(), 1, "one entry per chain");

    // Past the certificate's notAfter the remembered verdict does not hold: verified afresh,
    // and refused.
    let (_, not_after) = validity_window(chain).unwrap();
    let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_after + 1));
    let err = verifier.verify(chain, later).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
                | rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ExpiredContext { .. }
                )
        ),
        "{err:?}"
    );
    // Before its notBefore, likewise.
    let earlier = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1));
    assert!(verifier.verify(chain, earlier).is_err());

    // Failures are not remembered.
    let other = CertificateVerifier::from_pem(Ca::new("other-ca").pem.as_bytes()).unwrap();
    assert!(other.verify(chain, now).is_err());
    assert_eq!(other.remembered_chains(), 0);
}

#[test]
fn a_remembered_verdict_lapses_after_the_ttl() {
    let verified = Verified {
        verified_at: 1_000,
        not_before: 0,
        not_after: u64::MAX,
    };
    assert!(verified.holds_at(1_000));
    assert!(verified.holds_at(1_000 + VERIFIED_TTL_SECS - 1));
    assert!(!verified.holds_at(1_000 + VERIFIED_TTL_SECS));
    assert!(
        !verified.holds_at(999),
        "a clock that went back verifies again"
    );
}
