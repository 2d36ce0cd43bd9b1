use super::*;
use crate::auth::authn::testing::head;

const FILE: &str = "\
s3cr3t-alice,alice,uid-1,\"retail-admins,sre\"
s3cr3t-bob,bob,uid-2
s3cr3t-carol,carol,uid-3,ops,ignored-column,another
\"quoted,token\",dave,uid-4,\"\"
";

fn parse(content: &str) -> Result<TokenFile, TokenFileError> {
    TokenFile::parse(content.as_bytes(), Path::new("/etc/edgefleet/tokens.csv"))
}

#[test]
fn parses_kube_format() {
    let file = parse(FILE).unwrap();
    assert_eq!(file.len(), 4);
    let alice = file.lookup(b"s3cr3t-alice").unwrap();
    assert_eq!(
        alice,
        &UserInfo::new("alice")
            .with_uid("uid-1")
            .with_groups(["retail-admins", "sre"])
    );
    assert_eq!(
        file.lookup(b"s3cr3t-bob").unwrap().groups,
        Vec::<String>::new()
    );
    assert_eq!(file.lookup(b"s3cr3t-carol").unwrap().groups, ["ops"]);
    let dave = file.lookup(b"quoted,token").unwrap();
    assert_eq!((dave.name.as_str(), dave.groups.len()), ("dave", 0));
    assert!(file.lookup(b"s3cr3t").is_none());
    assert!(format!("{file:?}").contains("tokens: 4"));
    assert!(!format!("{file:?}").contains("s3cr3t"));
}

fn line_error(content: &str) -> (u64, String) {
    match parse(content).unwrap_err() {
        TokenFileError::Line {
            line,
            problem,
            path,
        } => {
            assert_eq!(path, Path::new("/etc/edgefleet/tokens.csv"));
            (line, problem.to_string())
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bad_lines_are_reported_with_their_number() {
    assert_eq!(
        line_error("a,alice,1\nb,bob\n"),
        (
            2,
            "must have at least 3 columns (token, user name, user uid), found 2".to_string()
        )
    );
    assert_eq!(
        line_error("a,alice,1\n\n,bob,2\n"),
        (3, "empty token".to_string())
    );
    assert_eq!(line_error("a,,1\n"), (1, "empty user name".to_string()));
    assert_eq!(
        line_error("a,alice,1\nb,bob,2\na,mallory,3\n"),
        (3, "duplicate token (first on line 1)".to_string())
    );
    match TokenFile::parse(b"a,alice,1\nb,bob,\xff\n", Path::new("t.csv")).unwrap_err() {
        TokenFileError::Line { line, problem, .. } => {
            assert_eq!(line, 2);
            assert!(matches!(problem, LineProblem::Csv(_)), "{problem}");
        }
        other => panic!("unexpected {other:?}"),
    }

    let message = parse("a,alice\n").unwrap_err().to_string();
    assert_eq!(
        message,
        "token file /etc/edgefleet/tokens.csv: line 1: must have at least 3 columns (token, user \
         name, user uid), found 2"
    );
}

#[test]
fn reading_a_missing_file_names_it() {
    let err = TokenFile::read(Path::new("/nonexistent/tokens.csv")).unwrap_err();
    assert!(matches!(err, TokenFileError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/tokens.csv"));
}

#[test]
fn bearer_token_extraction_follows_kube() {
    let token =
        |value: &str| bearer_token(&head(&[("authorization", value)]).headers).map(<[u8]>::to_vec);
    assert_eq!(token("Bearer abc"), Some(b"abc".to_vec()));
    assert_eq!(token("bearer abc"), Some(b"abc".to_vec()));
    assert_eq!(token("  BEARER abc  "), Some(b"abc".to_vec()));
    assert_eq!(token("Bearer abc def"), Some(b"abc".to_vec()));
    // Two spaces: kube sees an empty token, and no opinion.
    assert_eq!(token("Bearer  abc"), None);
    assert_eq!(token("Bearer"), None);
    assert_eq!(token("Basic YWxpY2U6cHc="), None);
    assert_eq!(bearer_token(&head(&[]).headers), None);
}

#[tokio::test]
async fn authenticates_known_tokens_and_rejects_unknown_ones() {
    let file = parse(FILE).unwrap();
    let user = file
        .authenticate(&head(&[("authorization", "Bearer s3cr3t-bob")]), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user, UserInfo::new("bob").with_uid("uid-2"));

    let err = file
        .authenticate(&head(&[("authorization", "Bearer s3cr3t-eve")]), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, AuthnError::InvalidBearerToken));
    assert!(!err.message().contains("s3cr3t"));

    let none = file
        .authenticate(&head(&[("authorization", "Basic x")]), &[])
        .await
        .unwrap();
    assert_eq!(none, None);
}
