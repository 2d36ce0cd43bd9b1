//! Bearer tokens from a static token file (`--token-auth-file`), kube's CSV format:
//!
//! ```text
//! token,user,uid,"group1,group2"
//! ```
//!
//! At least three columns; the fourth, when present, is a comma-separated group list (quoted
//! when it holds several); further columns are ignored. kube skips empty tokens and lets a
//! duplicate token silently win; we refuse both, with the line number, because either one is a
//! mistake in a file that grants identities.
//!
//! Tokens are kept only as SHA-256 digests and looked up by the digest of the presented token, so
//! neither the table in memory nor the lookup's timing reveals a token: a timing difference can
//! at most tell an attacker about a digest prefix, which does not help to find a preimage.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::HeaderMap;
use rustls_pki_types::CertificateDer;

use super::{Authenticator, AuthnError, Result};
use crate::auth::UserInfo;

/// The token in `Authorization: Bearer <token>`, following kube's `bearertoken` authenticator:
/// first `Authorization` header, trimmed, scheme compared case-insensitively, exactly one space
/// before the token. `None` when the request carries no bearer token.
pub fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes().trim_ascii();
    let mut parts = value.splitn(3, |b| *b == b' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.is_empty() {
        return None;
    }
    Some(token)
}

type Digest = [u8; 32];

fn digest(token: &[u8]) -> Digest {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token).as_ref());
    out
}

/// The line number of the record that starts at byte `offset`. The csv crate's own line count
/// is taken before it skips blank lines, so it names the blank line instead of the record.
fn line_at(content: &[u8], offset: u64) -> u64 {
    let offset = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(content.len());
    let start = content[offset..]
        .iter()
        .position(|b| *b != b'\n' && *b != b'\r')
        .map_or(content.len(), |skip| offset + skip);
    content[..start].iter().filter(|b| **b == b'\n').count() as u64 + 1
}

/// A token file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading token file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {}: line {line}: {problem}", path.display())]
    Line {
        path: PathBuf,
        line: u64,
        problem: LineProblem,
    },
}

/// What is wrong with one line of a token file.
#[derive(Debug, thiserror::Error)]
pub enum LineProblem {
    #[error("malformed CSV: {0}")]
    Csv(#[source] csv::Error),
    #[error("must have at least 3 columns (token, user name, user uid), found {0}")]
    TooFewColumns(usize),
    #[error("empty token")]
    EmptyToken,
    #[error("empty user name")]
    EmptyUser,
    #[error("duplicate token (first on line {0})")]
    DuplicateToken(u64),
}

/// The users of a token file, by token digest. Authenticates `Authorization: Bearer` requests;
/// an unknown token is an error (401), as in kube.
#[derive(Clone, Default)]
pub struct TokenFile {
    users: HashMap<Digest, UserInfo>,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("tokens", &self.users.len())
            .finish()
    }
}

impl TokenFile {
    pub fn read(path: &Path) -> Result<Self, TokenFileError> {
        let content = std::fs::read(path).map_err(|source| TokenFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&content, path)
    }

    /// Parses the content of a token file; `path` only names it in errors.
    pub fn parse(content: &[u8], path: &Path) -> Result<Self, TokenFileError> {
        let error = |line: u64, problem| TokenFileError::Line {
            path: path.to_owned(),
            line,
            problem,
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(content);
        let mut users = HashMap::new();
        let mut first_line = HashMap::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| line_at(content, p.byte()));
                error(line, LineProblem::Csv(e))
            })?;
            let line = record.position().map_or(0, |p| line_at(content, p.byte()));
            if record.len() < 3 {
                return Err(error(line, LineProblem::TooFewColumns(record.len())));
            }
            let (token, name, uid) = (&record[0], &record[1], &record[2]);
            if token.is_empty() {
                return Err(error(line, LineProblem::EmptyToken));
            }
            if name.is_empty() {
                return Err(error(line, LineProblem::EmptyUser));
            }
            let key = digest(token.as_bytes());
            if let Some(first) = first_line.insert(key, line) {
                return Err(error(line, LineProblem::DuplicateToken(first)));
            }
            let groups = record
                .get(3)
                .map(|groups| {
                    groups
                        .split(',')
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                })
                .into_iter()
                .flatten();
            users.insert(key, UserInfo::new(name).with_uid(uid).with_groups(groups));
        }
        Ok(TokenFile { users })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user a token belongs to.
    pub fn lookup(&self, token: &[u8]) -> Option<&UserInfo> {
        self.users.get(&digest(token))
    }
}

#[async_trait]
impl Authenticator for TokenFile {
    async fn authenticate(
        &self,
        head: &Parts,
        _peer_certificates: &[CertificateDer<'static>],
    ) -> Result<Option<UserInfo>> {
        let Some(token) = bearer_token(&head.headers) else {
            return Ok(None);
        };
        match self.lookup(token) {
            Some(user) => Ok(Some(user.clone())),
            None => Err(AuthnError::InvalidBearerToken),
        }
    }
}

#[cfg(test)]
mod tests;
