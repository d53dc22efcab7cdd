//! `govchain identity consent grant|revoke|list|export`: a citizen's
//! consents, and their export as a Kantara consent receipt.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use govchain_crypto::{Digest, PublicKey};
use govchain_proto::types::v1::{ConsentRecord, GrantConsent, RevokeConsent, transaction::Body};
use serde::Serialize;

use super::{
    CitizenArgs, CommitArgs, Session, Submitted, citizen_key, client_timeout, expires_ms, now_ms,
    parse_attribute_name, parse_citizen, parse_validity, print_view,
};
use crate::client::{CitizenConnectArgs, ConnectArgs, NodeConnectArgs};
use crate::cmd::blob;
use crate::cmd::keys::load_signing_key;
use crate::output::{self, Fields, Table, format_time_ms};
use crate::view::{ConsentView, or_dash};

/// The Kantara consent receipt version the export follows.
const CONSENT_RECEIPT_VERSION: &str = "KI-CR-v1.1.0";
/// Attribute names that the consent export marks as sensitive personal
/// information (special categories in GDPR terms).
const SENSITIVE_ATTRIBUTES: [&str; 4] = ["photo", "vaccination_status", "health", "biometrics"];

#[derive(Debug, Args)]
pub(super) struct ConsentArgs {
    #[command(subcommand)]
    command: ConsentCommand,
}

#[derive(Debug, Subcommand)]
enum ConsentCommand {
    /// Let a department read some attributes for one purpose until a time.
    #[command(
        long_about = "Grant a consent, signed by the citizen: the department may read the \
            listed attributes, for this purpose only, until the consent expires or is \
            revoked. Prints the consent id, which is the transaction's id; the department \
            cites it in every read. Modelled on the Kantara consent receipt (ISO/IEC TS \
            27560): see `consent export`.",
        after_help = "Example:\n  \
            govchain identity consent grant --key alice.key --department tax \\\n    \
            --attributes name,photo --purpose benefit-check --expires 30d --jurisdiction EU\n\n\
            Here --department is the department the consent is for; the citizen talks to \
            the first devnet node, or to --node."
    )]
    Grant(GrantArgs),
    /// Withdraw a consent; later reads under it are refused.
    #[command(
        after_help = "Example:\n  govchain identity consent revoke --key alice.key 5f0c...e1"
    )]
    Revoke(RevokeArgs),
    /// List a citizen's consents and their state.
    #[command(
        after_help = "Examples:\n  govchain identity consent list --citizen did:key:z6Mk... --key alice.key\n  govchain identity consent list --citizen did:key:z6Mk... --department tax   # tax's consents only"
    )]
    List(CitizenArgs),
    /// Export a consent as a Kantara consent receipt (JSON).
    #[command(
        long_about = "Export one consent as a consent receipt in the JSON form of the Kantara \
            Initiative Consent Receipt v1.1 (the basis of ISO/IEC TS 27560): version, \
            jurisdiction, consentTimestamp, collectionMethod, consentReceiptID, \
            piiPrincipalId (the citizen's DID), piiControllers, services with purposes \
            (consentType EXPLICIT, piiCategory = the attributes, termination), sensitive and \
            spiCat, plus a \"govchain\" object with the block height, transaction id and \
            current state. Always prints JSON.",
        after_help = "Example:\n  \
            govchain identity consent export 5f0c...e1 --citizen did:key:z6Mk... > receipt.json"
    )]
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct GrantArgs {
    /// The citizen's key file.
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// The department that may read (the consent's, not the node's: the
    /// citizen talks to the first devnet node, or --node).
    #[arg(long, value_name = "D")]
    department: String,
    /// Attribute names, comma-separated.
    #[arg(long, value_name = "A,B", value_delimiter = ',', required = true, value_parser = parse_attribute_name)]
    attributes: Vec<String>,
    /// Why the department may read them, e.g. benefit-check.
    #[arg(long, value_name = "P")]
    purpose: String,
    /// How long the consent lasts, e.g. 30d, 12h.
    #[arg(long, value_name = "DURATION", value_parser = parse_validity)]
    expires: Duration,
    /// Jurisdiction of the processing, e.g. EU.
    #[arg(long, value_name = "J")]
    jurisdiction: Option<String>,
    #[command(flatten)]
    commit: CommitArgs,
    #[command(flatten)]
    connect: NodeConnectArgs,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// The citizen's key file.
    #[arg(long, value_name = "KEYFILE")]
    key: PathBuf,
    /// The consent id (the granting transaction's id).
    #[arg(value_name = "CONSENT_ID", value_parser = blob::parse_transaction_id)]
    consent: Digest,
    #[command(flatten)]
    commit: CommitArgs,
    #[command(flatten)]
    connect: CitizenConnectArgs,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The consent id.
    #[arg(value_name = "CONSENT_ID", value_parser = blob::parse_transaction_id)]
    consent: Digest,
    /// The citizen who granted it.
    #[arg(long, value_name = "DID", value_parser = parse_citizen)]
    citizen: PublicKey,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub(super) async fn run(args: ConsentArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        ConsentCommand::Grant(args) => grant(args, json).await,
        ConsentCommand::Revoke(args) => revoke(args, json).await,
        ConsentCommand::List(args) => list_consents(args, json).await,
        ConsentCommand::Export(args) => export(args).await,
    }
}

#[derive(Debug, Serialize)]
struct GrantView {
    consent_id: String,
    citizen: String,
    department: String,
    attributes: Vec<String>,
    purpose: String,
    expires_ms: u64,
    expires: String,
    jurisdiction: String,
    transaction: Submitted,
}

async fn grant(args: GrantArgs, json: bool) -> anyhow::Result<()> {
    let department = args.department.clone();
    let key = load_signing_key(&args.key)?;
    let mut session = Session::open(&args.connect.connect_args(), client_timeout()).await?;
    let expires_ms = expires_ms(args.expires);
    let body = Body::GrantConsent(GrantConsent {
        department: department.clone(),
        attributes: args.attributes.clone(),
        purpose: args.purpose.clone(),
        expires_ms,
        jurisdiction: args.jurisdiction.clone().unwrap_or_default(),
    });
    let transaction = session
        .submit(&key, body, &args.commit, "the consent")
        .await?;
    let view = GrantView {
        consent_id: transaction.id.to_hex(),
        citizen: key.public_key().to_did_key(),
        department,
        attributes: args.attributes,
        purpose: args.purpose,
        expires_ms,
        expires: format_time_ms(expires_ms),
        jurisdiction: args.jurisdiction.unwrap_or_default(),
        transaction,
    };
    let mut fields = Fields::new();
    fields
        .add("consent id", &view.consent_id)
        .add("citizen", &view.citizen)
        .add("department", &view.department)
        .add("attributes", view.attributes.join(", "))
        .add("purpose", &view.purpose)
        .add("expires", &view.expires)
        .add("jurisdiction", or_dash(&view.jurisdiction));
    view.transaction.add_to(&mut fields);
    print_view(&view, &fields, json)
}

#[derive(Debug, Serialize)]
struct RevokeView {
    consent_id: String,
    transaction: Submitted,
}

async fn revoke(args: RevokeArgs, json: bool) -> anyhow::Result<()> {
    let key = load_signing_key(&args.key)?;
    let mut session = Session::open(&args.connect.connect_args(), client_timeout()).await?;
    let body = Body::RevokeConsent(RevokeConsent {
        consent_id: args.consent.to_vec(),
    });
    let transaction = session
        .submit(&key, body, &args.commit, "the revocation")
        .await?;
    let view = RevokeView {
        consent_id: args.consent.to_hex(),
        transaction,
    };
    let mut fields = Fields::new();
    fields
        .add("consent id", &view.consent_id)
        .add("state", "revoked");
    view.transaction.add_to(&mut fields);
    print_view(&view, &fields, json)
}

async fn list_consents(args: CitizenArgs, json: bool) -> anyhow::Result<()> {
    let key = citizen_key(args.key.as_deref())?;
    let mut session = Session::open(&args.connect.connect_args(), client_timeout()).await?;
    let identity = session.get_identity_as(&args.citizen, key.as_ref()).await?;
    let now = now_ms();
    let views: Vec<ConsentView> = identity
        .consents
        .iter()
        .map(|consent| ConsentView::new(consent, now))
        .collect();
    if json {
        return output::print_json(&views);
    }
    if views.is_empty() {
        return output::print(&format!(
            "{} has granted no consent",
            args.citizen.to_did_key()
        ));
    }
    output::print(&consent_table(&views).render())
}

pub(super) fn consent_table(views: &[ConsentView]) -> Table {
    let mut table = Table::new(&[
        "CONSENT ID",
        "DEPARTMENT",
        "ATTRIBUTES",
        "PURPOSE",
        "STATE",
        "EXPIRES",
    ]);
    for view in views {
        table.add(vec![
            view.consent_id.clone(),
            view.department.clone(),
            view.attributes.join(","),
            view.purpose.clone(),
            view.state.to_owned(),
            view.expires.clone(),
        ]);
    }
    table
}

/// A consent receipt after the Kantara Initiative Consent Receipt
/// Specification v1.1, the basis of ISO/IEC TS 27560.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConsentReceipt {
    version: &'static str,
    jurisdiction: String,
    /// Seconds since the epoch, as the specification writes it.
    consent_timestamp: u64,
    collection_method: &'static str,
    #[serde(rename = "consentReceiptID")]
    consent_receipt_id: String,
    language: &'static str,
    pii_principal_id: String,
    pii_controllers: Vec<PiiController>,
    services: Vec<ReceiptService>,
    sensitive: bool,
    spi_cat: Vec<String>,
    /// Where the consent lives on chain and its state now.
    govchain: ReceiptChainFacts,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PiiController {
    pii_controller: String,
    on_behalf: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptService {
    service: String,
    purposes: Vec<ReceiptPurpose>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptPurpose {
    purpose: String,
    consent_type: &'static str,
    pii_category: Vec<String>,
    primary_purpose: bool,
    termination: String,
    third_party_disclosure: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptChainFacts {
    block_height: u64,
    transaction_id: String,
    granted: String,
    expires: String,
    state: &'static str,
    revoked: Option<String>,
}

fn consent_receipt(consent: &ConsentRecord, now_ms: u64) -> ConsentReceipt {
    let view = ConsentView::new(consent, now_ms);
    let spi_cat: Vec<String> = consent
        .attributes
        .iter()
        .filter(|name| SENSITIVE_ATTRIBUTES.contains(&name.as_str()))
        .cloned()
        .collect();
    let termination = match &view.revoked {
        Some(revoked) => format!("revoked by the PII principal at {revoked}"),
        None => format!(
            "expires at {}; the PII principal may revoke it earlier with `govchain identity consent revoke {}`",
            view.expires, view.consent_id
        ),
    };
    ConsentReceipt {
        version: CONSENT_RECEIPT_VERSION,
        jurisdiction: consent.jurisdiction.clone(),
        consent_timestamp: consent.granted_ms / 1000,
        collection_method: "GrantConsent transaction signed by the PII principal's key and committed on the govchain ledger",
        consent_receipt_id: view.consent_id.clone(),
        language: "en",
        pii_principal_id: view.citizen.clone(),
        pii_controllers: vec![PiiController {
            pii_controller: consent.department.clone(),
            on_behalf: false,
        }],
        services: vec![ReceiptService {
            service: format!("govchain attribute access by {}", consent.department),
            purposes: vec![ReceiptPurpose {
                purpose: consent.purpose.clone(),
                consent_type: "EXPLICIT",
                pii_category: consent.attributes.clone(),
                primary_purpose: true,
                termination,
                third_party_disclosure: false,
            }],
        }],
        sensitive: !spi_cat.is_empty(),
        spi_cat,
        govchain: ReceiptChainFacts {
            block_height: consent.granted_height,
            transaction_id: view.consent_id,
            granted: view.granted,
            expires: view.expires,
            state: view.state,
            revoked: view.revoked,
        },
    }
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let mut session = Session::open(&args.connect, client_timeout()).await?;
    let identity = session.get_identity(&args.citizen).await?;
    let consent = identity
        .consents
        .iter()
        .find(|consent| consent.consent_id == args.consent.as_bytes())
        .with_context(|| {
            format!(
                "{} has no consent {}; list them with `govchain identity consent list --citizen {}`",
                args.citizen.to_did_key(),
                args.consent,
                args.citizen.to_did_key()
            )
        })?;
    output::print_json(&consent_receipt(consent, now_ms()))
}

#[cfg(test)]
mod tests {
    use govchain_crypto::SigningKey;

    use super::*;
    use crate::cmd::identity::IdentityCommand;
    use crate::cmd::identity::tests::parse;

    #[test]
    fn consent_grant_splits_attributes_and_needs_an_expiry() {
        let parsed = parse(&[
            "consent",
            "grant",
            "--key",
            "k",
            "--department",
            "tax",
            "--attributes",
            "name,photo",
            "--purpose",
            "p",
            "--expires",
            "30d",
        ])
        .expect("parses");
        let IdentityCommand::Consent(ConsentArgs {
            command: ConsentCommand::Grant(grant),
        }) = parsed
        else {
            panic!("not grant");
        };
        assert_eq!(grant.attributes, ["name", "photo"]);
        assert_eq!(grant.expires, Duration::from_secs(30 * 86_400));
        assert!(
            parse(&[
                "consent",
                "grant",
                "--key",
                "k",
                "--department",
                "tax",
                "--attributes",
                "name",
                "--purpose",
                "p",
            ])
            .is_err()
        );
    }

    #[test]
    fn the_consent_receipt_has_the_kantara_shape() {
        let citizen = SigningKey::from_seed([3; 32]).public_key();
        let consent = ConsentRecord {
            consent_id: vec![0xab; 32],
            citizen: citizen.as_bytes().to_vec(),
            department: "tax".into(),
            attributes: vec!["name".into(), "photo".into()],
            purpose: "benefit-check".into(),
            granted_ms: 1_700_000_000_123,
            expires_ms: 1_800_000_000_000,
            jurisdiction: "EU".into(),
            granted_height: 42,
            revoked: false,
            revoked_ms: 0,
        };
        let receipt =
            serde_json::to_value(consent_receipt(&consent, 1_700_000_001_000)).expect("json");
        assert_eq!(receipt["version"], "KI-CR-v1.1.0");
        assert_eq!(receipt["jurisdiction"], "EU");
        assert_eq!(receipt["consentTimestamp"], 1_700_000_000);
        assert_eq!(receipt["consentReceiptID"], "ab".repeat(32));
        assert_eq!(receipt["piiPrincipalId"], citizen.to_did_key());
        assert_eq!(receipt["piiControllers"][0]["piiController"], "tax");
        let purpose = &receipt["services"][0]["purposes"][0];
        assert_eq!(purpose["purpose"], "benefit-check");
        assert_eq!(purpose["consentType"], "EXPLICIT");
        assert_eq!(purpose["piiCategory"], serde_json::json!(["name", "photo"]));
        assert_eq!(purpose["primaryPurpose"], true);
        assert!(
            purpose["termination"]
                .as_str()
                .expect("text")
                .contains("2027-01-15"),
            "{purpose}"
        );
        assert!(receipt["services"][0]["service"].is_string());
        assert_eq!(receipt["sensitive"], true);
        assert_eq!(receipt["spiCat"], serde_json::json!(["photo"]));
        assert_eq!(receipt["govchain"]["blockHeight"], 42);
        assert_eq!(receipt["govchain"]["state"], "valid");
    }

    #[test]
    fn a_revoked_consent_says_so_in_its_receipt() {
        let consent = ConsentRecord {
            consent_id: vec![1; 32],
            department: "health".into(),
            attributes: vec!["name".into()],
            revoked: true,
            revoked_ms: 1_000,
            expires_ms: 2_000_000,
            ..ConsentRecord::default()
        };
        let receipt = serde_json::to_value(consent_receipt(&consent, 5)).expect("json");
        assert_eq!(receipt["sensitive"], false);
        assert_eq!(receipt["govchain"]["state"], "revoked");
        assert!(
            receipt["services"][0]["purposes"][0]["termination"]
                .as_str()
                .expect("text")
                .starts_with("revoked")
        );
    }
}
