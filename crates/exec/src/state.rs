use govchain_crypto::PublicKey;

/// Read access to world state at the head of the chain.
pub trait StateRead {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("state read failed: {0}")]
    Read(String),
    #[error("state value under {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

const NONCE_PREFIX: &[u8] = b"nonce/";

/// The state key of a signer's last committed nonce (a u64, big-endian).
pub fn nonce_key(signer: &PublicKey) -> Vec<u8> {
    [NONCE_PREFIX, signer.as_bytes()].concat()
}

/// A signer's last committed nonce; 0 if it never committed a transaction.
pub fn read_nonce(state: &impl StateRead, signer: &PublicKey) -> Result<u64, StateError> {
    let key = nonce_key(signer);
    match state.get(&key)? {
        None => Ok(0),
        Some(bytes) => {
            let array: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| StateError::Corrupt {
                    key: format!("nonce/{signer}"),
                    reason: format!("{} bytes, expected 8", bytes.len()),
                })?;
            Ok(u64::from_be_bytes(array))
        }
    }
}

/// The message stored under `key` (`what` names it in a corruption error).
pub(crate) fn read_message<M: prost::Message + Default>(
    state: &impl StateRead,
    key: &[u8],
    what: &str,
) -> Result<Option<M>, StateError> {
    match state.get(key)? {
        None => Ok(None),
        Some(bytes) => M::decode(bytes.as_slice())
            .map(Some)
            .map_err(|err| StateError::Corrupt {
                key: what.to_owned(),
                reason: err.to_string(),
            }),
    }
}

/// The big-endian counter stored under `key`; 0 when absent.
pub(crate) fn read_u64(state: &impl StateRead, key: &[u8], what: &str) -> Result<u64, StateError> {
    let Some(bytes) = state.get(key)? else {
        return Ok(0);
    };
    let array: [u8; 8] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| StateError::Corrupt {
            key: what.to_owned(),
            reason: format!("{} bytes, expected 8", bytes.len()),
        })?;
    Ok(u64::from_be_bytes(array))
}
