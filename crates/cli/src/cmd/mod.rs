//! One module per subcommand. Each has an `XArgs` clap struct and a `run`.

pub mod admin;
pub mod approval;
pub mod bench;
pub mod blob;
pub mod block;
pub mod blocks;
pub mod certs;
pub mod config;
pub mod devnet;
pub mod directory;
pub mod genesis;
pub mod governance;
pub mod identity;
pub mod ingest;
pub mod keys;
pub mod ledger;
pub mod listing;
pub mod node;
pub mod record;
pub mod status;
pub mod tx;
pub mod tx_follow;
pub mod verify;
