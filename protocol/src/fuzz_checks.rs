//! What the fuzz targets in `protocol/fuzz` check, as plain functions: the targets call
//! them with the fuzzer's bytes, and `tests/fuzz_crashers.rs` calls them with every saved
//! crasher and seed, so whatever a fuzzer once found stays fixed in a normal test run.
//!
//! Each function panics only when a property is broken; hostile input must give errors.

use mnemon_crdt::Store;
use mnemon_identity::{Keypair, Ticket};

use crate::frame::{FrameDecoder, encode_frame};
use crate::message::Message;
use crate::session::{Output, Session, SessionConfig};

/// The frame decoder and the message codec on arbitrary bytes, fed in pieces whose sizes
/// the first byte picks: never a panic, no frame above the limit, and every message that
/// decodes encodes back to bytes that decode to the same message.
pub fn frames(data: &[u8]) {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let max = 4096;
    let mut decoder = FrameDecoder::new(max);
    for piece in rest.chunks(usize::from(step).max(1)) {
        decoder.push(piece);
        while let Ok(Some(payload)) = decoder.next_frame() {
            assert!(payload.len() <= max, "a frame above the limit");
            message_round_trip(&payload);
        }
    }
    // The whole input as one payload, too.
    message_round_trip(rest);
}

fn message_round_trip(payload: &[u8]) {
    if let Ok(message) = Message::decode(payload) {
        let again = Message::decode(&message.encode()).expect("a re-encoded message decodes");
        assert_eq!(again, message, "the codec does not round-trip");
        let mut framed = Vec::new();
        encode_frame(&message.encode(), &mut framed).expect("fits a frame");
    }
}

/// The ticket parser on arbitrary text: never a panic, and a ticket that parses prints as
/// text that parses to the same ticket.
pub fn ticket(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(ticket) = text.parse::<Ticket>() {
        let again: Ticket = ticket.to_string().parse().expect("a printed ticket parses");
        assert_eq!(again, ticket, "the ticket text does not round-trip");
        // Checking its signature and expiry must not panic either.
        let _ = ticket.invite.verify(0);
    }
}

/// A sync session fed arbitrary frames from a peer, against a real (in-memory) store:
/// never a panic, and the session either goes on or closes with a reason.
pub fn session(data: &[u8]) {
    let mut store = Store::open_in_memory(Keypair::from_seed(&[1; 32])).expect("store");
    let peer = Keypair::from_seed(&[2; 32]).did();
    let mut session = Session::new(store.did(), peer, SessionConfig::default(), 0);
    session.start(&store);
    let mut decoder = FrameDecoder::new(1 << 20);
    decoder.push(data);
    let mut now = 0;
    while let Ok(Some(payload)) = decoder.next_frame() {
        now += 10;
        session.handle_input(&payload, now, &mut store);
        while let Some(output) = session.poll_output() {
            if let Output::Closed(reason) = output {
                assert!(!reason.is_empty(), "closed without a reason");
            }
        }
    }
    session.handle_timeout(now + 1_000_000, &store);
}
