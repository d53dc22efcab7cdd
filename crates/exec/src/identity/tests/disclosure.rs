//! Tests of the read rule (`identity::disclosure`): who sees what of a
//! citizen's record, on states built by real blocks.

use super::*;
use crate::identity::disclosure::*;

fn consents_of(chain: &Chain, citizen: &SigningKey) -> Vec<ConsentRecord> {
    consents(&chain.state, &citizen.public_key()).expect("state reads")
}

fn disclosure(chain: &Chain, reader: Reader<'_>) -> Result<Disclosure, Refusal> {
    identity_disclosure(
        chain.departments(),
        reader,
        &alice().public_key(),
        &consents_of(chain, &alice()),
        chain.now_ms,
    )
}

fn signed_read(read: CitizenRead, key: &SigningKey, request_time_ms: u64) -> Vec<u8> {
    let digest = citizen_read_digest(CHAIN, read, &alice().public_key(), request_time_ms);
    key.sign(digest.as_bytes()).to_vec()
}

#[test]
fn the_citizen_sees_everything() {
    let (chain, _) = with_consent();
    let seen = disclosure(&chain, Reader::Citizen).expect("the citizen may read");
    assert!(seen.is_everything());
    assert!(seen.shows_attribute("date_of_birth"));
    assert!(seen.shows_consent(&consents_of(&chain, &alice())[0]));
}

#[test]
fn a_department_without_consent_or_role_is_refused_with_the_way_in() {
    let (chain, _) = with_consent();
    let refusal = disclosure(&chain, Reader::Department("police")).expect_err("no relation");
    let Refusal::PermissionDenied(message) = refusal else {
        panic!("not PermissionDenied: {refusal:?}");
    };
    assert!(message.contains("no consent"), "{message}");
    assert!(message.contains("GrantConsent"), "{message}");
    assert!(message.contains("citizen_signature"), "{message}");
}

#[test]
fn a_consented_department_sees_only_the_consented_attributes_and_its_consents() {
    let (mut chain, _) = with_consent();
    chain.ok(
        &alice(),
        grant("registry", &["name"], PURPOSE, CONSENT_END_MS),
    );
    let consents = consents_of(&chain, &alice());
    let seen = disclosure(&chain, Reader::Department("health")).expect("consented");
    assert!(!seen.is_everything());
    assert!(seen.shows_attribute("name"));
    assert!(!seen.shows_attribute("date_of_birth"));
    assert!(seen.shows_consent(&consents[0]), "its own consent");
    assert!(!seen.shows_consent(&consents[1]), "registry's consent");
}

#[test]
fn an_attesting_department_sees_what_it_may_attest_without_consent() {
    let (chain, _) = with_consent();
    let seen = disclosure(&chain, Reader::Department("registry")).expect("attester");
    assert!(seen.shows_attribute("name"));
    assert!(seen.shows_attribute("date_of_birth"));
    assert!(!seen.shows_attribute("address"), "genesis does not list it");
    assert!(!seen.shows_consent(&consents_of(&chain, &alice())[0]));
}

#[test]
fn a_revoked_or_expired_consent_shows_the_identity_but_no_attribute() {
    let (mut chain, consent) = with_consent();
    chain.ok(&alice(), revoke_consent(&consent));
    let seen = disclosure(&chain, Reader::Department("health")).expect("it holds a consent");
    assert!(!seen.shows_attribute("name"), "revoked");
    assert!(seen.shows_consent(&consents_of(&chain, &alice())[0]));

    let (mut chain, _) = with_consent();
    chain.advance_to(CONSENT_END_MS);
    let seen = disclosure(&chain, Reader::Department("health")).expect("it holds a consent");
    assert!(!seen.shows_attribute("name"), "expired at its end");
}

#[test]
fn a_department_sees_only_its_own_accesses() {
    let (mut chain, consent) = with_consent();
    chain.ok(
        &alice(),
        grant("registry", &["name"], PURPOSE, CONSENT_END_MS),
    );
    let registry_consent = consents_of(&chain, &alice())[1].consent_id.clone();
    let registry_consent = Digest::from_slice(&registry_consent).expect("a digest");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(chain.ok(&health(), access(&alice(), "name", &consent, PURPOSE)));
        chain.ok(
            &registry(),
            access(&alice(), "name", &registry_consent, PURPOSE),
        );
    }
    let citizen = alice().public_key();
    let page = |reader: Reader<'_>, first, limit| {
        let shown = access_log_disclosure(reader);
        let (records, next) = accesses_page_where(&chain.state, &citizen, first, limit, |a| {
            shown.shows_access(a)
        })
        .expect("reads");
        let ids: Vec<Vec<u8>> = records.into_iter().map(|r| r.transaction_id).collect();
        (ids, next)
    };
    let health_ids: Vec<Vec<u8>> = ids.iter().map(|id| id.to_vec()).collect();
    assert_eq!(
        page(Reader::Department("health"), 1, 100),
        (health_ids.clone(), None)
    );
    // Pages fill with the department's own accesses only.
    assert_eq!(
        page(Reader::Department("health"), 1, 2),
        (health_ids[..2].to_vec(), Some(4))
    );
    assert_eq!(
        page(Reader::Department("health"), 4, 2),
        (health_ids[2..].to_vec(), None)
    );
    assert_eq!(page(Reader::Department("police"), 1, 100), (vec![], None));
    assert_eq!(page(Reader::Citizen, 1, 100).0.len(), 6);
}

#[test]
fn a_citizen_request_verifies_only_with_its_key_rpc_chain_and_time() {
    let citizen = alice().public_key();
    let now = START_MS;
    let check = |read, chain: &str, signature: &[u8], time| {
        check_citizen_request(chain, read, &citizen, time, signature, now)
    };
    let good = signed_read(CitizenRead::GetIdentity, &alice(), now);
    assert_eq!(check(CitizenRead::GetIdentity, CHAIN, &good, now), Ok(()));
    // The edges of the window count; one past them does not.
    for time in [
        now - REQUEST_TIME_SKEW_MS_MAX,
        now + REQUEST_TIME_SKEW_MS_MAX,
    ] {
        let signature = signed_read(CitizenRead::GetIdentity, &alice(), time);
        assert_eq!(
            check(CitizenRead::GetIdentity, CHAIN, &signature, time),
            Ok(())
        );
    }
    let old = now - REQUEST_TIME_SKEW_MS_MAX - 1;
    let signature = signed_read(CitizenRead::GetIdentity, &alice(), old);
    assert_eq!(
        check(CitizenRead::GetIdentity, CHAIN, &signature, old),
        Err(CitizenRequestError::OutsideWindow {
            request_time_ms: old,
            now_ms: now,
            skew_ms: REQUEST_TIME_SKEW_MS_MAX + 1
        })
    );
    let bad_signature = |result: Result<(), CitizenRequestError>| {
        matches!(result, Err(CitizenRequestError::BadSignature { .. }))
    };
    // Another RPC, another chain, another time, another key.
    assert!(bad_signature(check(
        CitizenRead::ListAccesses,
        CHAIN,
        &good,
        now
    )));
    assert!(bad_signature(check(
        CitizenRead::GetIdentity,
        "other-chain",
        &good,
        now
    )));
    assert!(bad_signature(check(
        CitizenRead::GetIdentity,
        CHAIN,
        &good,
        now + 1
    )));
    let by_bob = signed_read(CitizenRead::GetIdentity, &bob(), now);
    assert!(bad_signature(check(
        CitizenRead::GetIdentity,
        CHAIN,
        &by_bob,
        now
    )));
    assert_eq!(
        check(CitizenRead::GetIdentity, CHAIN, &good[..63], now),
        Err(CitizenRequestError::Malformed { len: 63 })
    );
}

#[test]
fn the_citizen_read_digest_is_pinned() {
    // Clients in other languages compute this digest; it never changes.
    let digest = citizen_read_digest(
        "govchain-dev",
        CitizenRead::ListAccesses,
        &alice().public_key(),
        1_700_000_000_000,
    );
    let mut expected = Vec::new();
    for field in [
        b"govchain/citizen-read/v1".as_slice(),
        b"govchain-dev",
        b"ListAccesses",
        alice().public_key().as_bytes(),
    ] {
        expected.extend_from_slice(&(field.len() as u32).to_be_bytes());
        expected.extend_from_slice(field);
    }
    expected.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
    assert_eq!(digest, Digest::sha256(&expected));
}

#[test]
fn a_personal_blob_is_visible_only_to_holder_consented_and_accessing_departments() {
    let (mut chain, consent) = with_consent();
    let name_cid = cid_of("name", "Alice Example");
    let birth_cid = cid_of("date_of_birth", "1990-01-01");
    let visible = |chain: &Chain, department: &str, cid: &str| {
        blob_visible_to(&chain.state, department, "registry", cid, chain.now_ms)
            .expect("state reads")
    };
    // The holder (these tests' declarations name the registry).
    assert!(visible(&chain, "registry", &name_cid));
    // A consent in force covering the attribute, and only that attribute.
    assert!(visible(&chain, "health", &name_cid));
    assert!(!visible(&chain, "health", &birth_cid));
    assert!(!visible(&chain, "police", &name_cid));
    // After an access, revoking the consent does not unsee the blob.
    chain.ok(&health(), access(&alice(), "name", &consent, PURPOSE));
    chain.ok(&alice(), revoke_consent(&consent));
    assert!(visible(&chain, "health", &name_cid));
    // A replaced value: only the node's own department.
    chain.ok(&alice(), declare("date_of_birth", "1990-01-02"));
    assert!(!visible(&chain, "health", &birth_cid));
    assert!(visible(&chain, "registry", &birth_cid));
    // A blob that is nobody's attribute is anyone's to stat.
    assert!(visible(&chain, "police", &cid_of("name", "not declared")));
}

#[test]
fn an_expired_consent_does_not_reveal_a_blob() {
    let (mut chain, _) = with_consent();
    chain.advance_to(CONSENT_END_MS);
    assert!(
        !blob_visible_to(
            &chain.state,
            "health",
            "registry",
            &cid_of("name", "Alice Example"),
            chain.now_ms
        )
        .expect("state reads")
    );
}
