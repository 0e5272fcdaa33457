//! API bearer tokens: created by `aggregator token create`, checked on every
//! API call.
//!
//! A token is `slc_` followed by 64 hex digits (256 random bits). Only its
//! SHA-256 is stored, in `sluice_tokens` on the first shard; a stolen table
//! grants nothing. Because tokens are uniformly random, a fast hash is as
//! good as a slow one here. A token carries a grant: a list of zones, the
//! security role, or admin (every zone and the security role).

use sha2::{Digest, Sha256};

use crate::store::{Shard, StoreError};

const PREFIX: &str = "slc_";

/// What a token may read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub zones: Vec<String>,
    pub security: bool,
    pub admin: bool,
}

impl Grant {
    pub fn may_read_zone(&self, zone: &str) -> bool {
        self.admin || self.zones.iter().any(|z| z == zone)
    }

    pub fn may_read_security(&self) -> bool {
        self.admin || self.security
    }
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a token with `grant` and returns it; it is shown only this once.
pub async fn create(shard: &Shard, grant: &Grant) -> Result<String, StoreError> {
    let token = format!("{PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()));
    let client = shard.client().await?;
    client
        .execute(
            "INSERT INTO sluice_tokens (sha256, zones, security, admin) VALUES ($1, $2, $3, $4)",
            &[&digest(&token), &grant.zones, &grant.security, &grant.admin],
        )
        .await
        .map_err(|source| StoreError::Db {
            shard: shard.name.clone(),
            source,
        })?;
    Ok(token)
}

/// The grant of `token`, or `None` if it is unknown.
pub async fn lookup(shard: &Shard, token: &str) -> Result<Option<Grant>, StoreError> {
    if !token.starts_with(PREFIX) {
        return Ok(None);
    }
    let client = shard.client().await?;
    let row = client
        .query_opt(
            "SELECT zones, security, admin FROM sluice_tokens WHERE sha256 = $1",
            &[&digest(token)],
        )
        .await
        .map_err(|source| StoreError::Db {
            shard: shard.name.clone(),
            source,
        })?;
    Ok(row.map(|row| Grant {
        zones: row.get(0),
        security: row.get(1),
        admin: row.get(2),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_grants_are_exact() {
        let grant = Grant {
            zones: vec!["a.example".into()],
            ..Grant::default()
        };
        assert!(grant.may_read_zone("a.example"));
        assert!(!grant.may_read_zone("b.example"));
        assert!(!grant.may_read_zone("A.example.evil"));
        assert!(!grant.may_read_security());
        let admin = Grant {
            admin: true,
            ..Grant::default()
        };
        assert!(admin.may_read_zone("anything") && admin.may_read_security());
    }

    #[test]
    fn digests_differ_per_token() {
        assert_ne!(digest("slc_a"), digest("slc_b"));
        assert_eq!(digest("slc_a").len(), 32);
    }
}
