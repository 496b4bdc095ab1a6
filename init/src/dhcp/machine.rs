//! The DHCPv4 client state machine (RFC 2131 section 4.4), pure: time is a [`Duration`] since
//! the client started, packets come in as [`Incoming`], and every step returns the
//! [`Action`]s to perform (send, apply or remove a lease). No I/O, so it is table-tested.
//!
//! INIT -> SELECTING (DISCOVER) -> REQUESTING (REQUEST) -> BOUND; at T1 RENEWING (unicast
//! REQUEST to the server), at T2 REBINDING (broadcast REQUEST), at the end of the lease the
//! address is removed and the client starts over. A NAK in any state removes the lease and
//! starts over. Retransmissions back off from 4 s to 64 s.

use std::net::Ipv4Addr;
use std::time::Duration;

/// What a server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The address (yiaddr).
    pub addr: Ipv4Addr,
    /// The subnet prefix length (from the subnet mask; 24 when absent).
    pub prefix: u8,
    /// The first router, if any.
    pub router: Option<Ipv4Addr>,
    /// Name servers.
    pub dns: Vec<Ipv4Addr>,
    /// The domain name, if any.
    pub domain: Option<String>,
    /// The server identifier.
    pub server: Ipv4Addr,
    /// Lease time in seconds.
    pub lease_secs: u32,
    /// T1 in seconds (renewal).
    pub t1_secs: u32,
    /// T2 in seconds (rebinding).
    pub t2_secs: u32,
}

impl Lease {
    /// T1 and T2 from the options, or their RFC defaults (0.5 and 0.875 of the lease), kept in
    /// order: T1 <= T2 <= lease.
    pub fn timers(lease_secs: u32, t1: Option<u32>, t2: Option<u32>) -> (u32, u32) {
        let t2 = t2
            .unwrap_or(lease_secs / 8 * 7 + lease_secs % 8 * 7 / 8)
            .min(lease_secs);
        let t1 = t1.unwrap_or(lease_secs / 2).min(t2);
        (t1, t2)
    }
}

/// A packet from a server, already checked to be for this client (chaddr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// DHCPOFFER.
    Offer {
        /// Transaction id.
        xid: u32,
        /// What is offered.
        lease: Lease,
    },
    /// DHCPACK.
    Ack {
        /// Transaction id.
        xid: u32,
        /// What is granted.
        lease: Lease,
    },
    /// DHCPNAK.
    Nak {
        /// Transaction id.
        xid: u32,
    },
}

/// The kind of an outgoing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// DHCPDISCOVER.
    Discover,
    /// DHCPREQUEST.
    Request,
    /// DHCPRELEASE.
    Release,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its kind.
    pub kind: Kind,
    /// Transaction id.
    pub xid: u32,
    /// `ciaddr` (renewing, rebinding, release).
    pub ciaddr: Option<Ipv4Addr>,
    /// Option 50 (selecting a offer).
    pub requested: Option<Ipv4Addr>,
    /// Option 54 (selecting an offer, release).
    pub server_id: Option<Ipv4Addr>,
    /// Unicast to this server; `None` = broadcast.
    pub unicast: Option<Ipv4Addr>,
}

/// What the client must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a message.
    Send(Outgoing),
    /// Configure the lease (address, route, resolvers).
    Apply(Lease),
    /// Remove a lease's configuration.
    Remove(Lease),
}

/// The client's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not started.
    Init,
    /// DISCOVER sent, waiting for an offer.
    Selecting,
    /// REQUEST sent for this offer.
    Requesting(Lease),
    /// Holding a lease.
    Bound,
    /// After T1: unicast renewal.
    Renewing,
    /// After T2: broadcast rebinding.
    Rebinding,
}

/// Requests sent for one offer before starting over.
pub const MAX_REQUESTS: u32 = 4;

/// The retransmission delay after `tries` sends: 4, 8, 16, 32, then 64 s.
pub fn backoff(tries: u32) -> Duration {
    Duration::from_secs(4u64 << tries.min(4))
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The current state.
    pub state: State,
    /// The lease held (Bound, Renewing, Rebinding).
    pub lease: Option<Lease>,
    xid: u32,
    tries: u32,
    bound_at: Duration,
    deadline: Duration,
}

impl Machine {
    /// A client whose first transaction id is `xid` (later ones count up).
    pub fn new(xid: u32) -> Self {
        Machine {
            state: State::Init,
            lease: None,
            xid,
            tries: 0,
            bound_at: Duration::ZERO,
            deadline: Duration::ZERO,
        }
    }

    /// When [`Machine::on_timeout`] is due.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    fn send(&self, kind: Kind, unicast: Option<Ipv4Addr>) -> Outgoing {
        Outgoing {
            kind,
            xid: self.xid,
            ciaddr: None,
            requested: None,
            server_id: None,
            unicast,
        }
    }

    fn discover(&mut self, now: Duration, new_xid: bool) -> Vec<Action> {
        if new_xid {
            self.xid = self.xid.wrapping_add(1);
            self.tries = 0;
        }
        self.state = State::Selecting;
        self.deadline = now + backoff(self.tries);
        self.tries += 1;
        vec![Action::Send(self.send(Kind::Discover, None))]
    }

    fn select(&mut self, now: Duration, offer: &Lease) -> Vec<Action> {
        self.deadline = now + backoff(self.tries);
        self.tries += 1;
        vec![Action::Send(Outgoing {
            requested: Some(offer.addr),
            server_id: Some(offer.server),
            ..self.send(Kind::Request, None)
        })]
    }

    fn renew(&mut self, now: Duration, lease: &Lease, broadcast: bool) -> Vec<Action> {
        let end = if broadcast {
            self.bound_at + secs(lease.lease_secs)
        } else {
            self.bound_at + secs(lease.t2_secs)
        };
        // Half the time left, at least 60 s (RFC 2131 4.4.5), never past the end.
        let half = end.saturating_sub(now) / 2;
        self.deadline = (now + half.max(Duration::from_secs(60))).min(end);
        let unicast = (!broadcast).then_some(lease.server);
        vec![Action::Send(Outgoing {
            ciaddr: Some(lease.addr),
            ..self.send(Kind::Request, unicast)
        })]
    }

    fn bind(&mut self, now: Duration, lease: Lease) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(old) = self.lease.take() {
            if old.addr != lease.addr || old.prefix != lease.prefix || old.router != lease.router {
                out.push(Action::Remove(old));
            }
        }
        self.state = State::Bound;
        self.bound_at = now;
        self.deadline = now + secs(lease.t1_secs);
        self.tries = 0;
        self.lease = Some(lease.clone());
        out.push(Action::Apply(lease));
        out
    }

    fn drop_lease(&mut self) -> Vec<Action> {
        self.lease.take().map(Action::Remove).into_iter().collect()
    }

    /// Starts (or restarts) the client.
    pub fn start(&mut self, now: Duration) -> Vec<Action> {
        self.discover(now, true)
    }

    /// Handles a packet.
    pub fn on_packet(&mut self, now: Duration, packet: Incoming) -> Vec<Action> {
        let xid_ok = |x: u32| x == self.xid;
        match (self.state.clone(), packet) {
            (State::Selecting, Incoming::Offer { xid, lease }) if xid_ok(xid) => {
                self.tries = 0;
                let out = self.select(now, &lease);
                self.state = State::Requesting(lease);
                out
            }
            (State::Requesting(_), Incoming::Ack { xid, lease })
            | (State::Renewing | State::Rebinding, Incoming::Ack { xid, lease })
                if xid_ok(xid) =>
            {
                self.bind(now, lease)
            }
            (State::Requesting(_) | State::Renewing | State::Rebinding, Incoming::Nak { xid })
                if xid_ok(xid) =>
            {
                let mut out = self.drop_lease();
                out.extend(self.discover(now, true));
                out
            }
            // Anything else (a late offer, another client's transaction) is ignored.
            _ => Vec::new(),
        }
    }

    /// Handles the deadline passing.
    pub fn on_timeout(&mut self, now: Duration) -> Vec<Action> {
        if now < self.deadline {
            return Vec::new();
        }
        match self.state.clone() {
            State::Init => self.discover(now, true),
            State::Selecting => self.discover(now, false),
            State::Requesting(offer) => {
                if self.tries >= MAX_REQUESTS {
                    self.discover(now, true)
                } else {
                    self.select(now, &offer)
                }
            }
            State::Bound | State::Renewing | State::Rebinding => {
                let Some(lease) = self.lease.clone() else {
                    return self.discover(now, true);
                };
                let t2 = self.bound_at + secs(lease.t2_secs);
                let end = self.bound_at + secs(lease.lease_secs);
                if now >= end {
                    let mut out = self.drop_lease();
                    out.extend(self.discover(now, true));
                    out
                } else if now >= t2 {
                    if self.state != State::Rebinding {
                        self.xid = self.xid.wrapping_add(1);
                    }
                    self.state = State::Rebinding;
                    self.renew(now, &lease, true)
                } else {
                    if self.state == State::Bound {
                        self.xid = self.xid.wrapping_add(1);
                    }
                    self.state = State::Renewing;
                    self.renew(now, &lease, false)
                }
            }
        }
    }

    /// Gives the lease back (on SIGTERM): a RELEASE to the server and the removal.
    pub fn release(&mut self) -> Vec<Action> {
        let Some(lease) = self.lease.clone() else {
            return Vec::new();
        };
        self.xid = self.xid.wrapping_add(1);
        let msg = Outgoing {
            ciaddr: Some(lease.addr),
            server_id: Some(lease.server),
            ..self.send(Kind::Release, Some(lease.server))
        };
        self.state = State::Init;
        let mut out = vec![Action::Send(msg)];
        out.extend(self.drop_lease());
        out
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(addr: [u8; 4], secs: u32) -> Lease {
        let (t1_secs, t2_secs) = Lease::timers(secs, None, None);
        Lease {
            addr: addr.into(),
            prefix: 24,
            router: Some([10, 0, 2, 2].into()),
            dns: vec![[10, 0, 2, 3].into()],
            domain: None,
            server: [10, 0, 2, 2].into(),
            lease_secs: secs,
            t1_secs,
            t2_secs,
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A compact view of actions: "D" discover broadcast, "R" request broadcast, "R>" unicast
    /// request, "X>" release, "+a.b.c.d" apply, "-a.b.c.d" remove.
    fn view(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Send(o) => {
                    let k = match o.kind {
                        Kind::Discover => "D",
                        Kind::Request => "R",
                        Kind::Release => "X",
                    };
                    format!("{k}{}", if o.unicast.is_some() { ">" } else { "" })
                }
                Action::Apply(l) => format!("+{}", l.addr),
                Action::Remove(l) => format!("-{}", l.addr),
            })
            .collect()
    }

    #[test]
    fn timers() {
        let cases = [
            (86400, None, None, (43200, 75600)),
            (3600, Some(100), Some(200), (100, 200)),
            (100, Some(300), None, (87, 87)),
            (100, None, Some(1000), (50, 100)),
            (0, None, None, (0, 0)),
        ];
        for (lease, t1, t2, want) in cases {
            assert_eq!(Lease::timers(lease, t1, t2), want, "{lease} {t1:?} {t2:?}");
        }
    }

    enum Ev {
        Start,
        Offer(u32, [u8; 4]),
        Ack(u32, [u8; 4]),
        Nak(u32),
        Tick,
        Release,
    }

    /// (time, event, expected actions, expected state name)
    fn run(steps: &[(u64, Ev, &[&str], &str)]) {
        let mut m = Machine::new(100);
        for (i, (t, ev, want, state)) in steps.iter().enumerate() {
            let now = s(*t);
            let out = match ev {
                Ev::Start => m.start(now),
                Ev::Offer(x, a) => m.on_packet(
                    now,
                    Incoming::Offer {
                        xid: *x,
                        lease: lease(*a, 100),
                    },
                ),
                Ev::Ack(x, a) => m.on_packet(
                    now,
                    Incoming::Ack {
                        xid: *x,
                        lease: lease(*a, 100),
                    },
                ),
                Ev::Nak(x) => m.on_packet(now, Incoming::Nak { xid: *x }),
                Ev::Tick => m.on_timeout(now),
                Ev::Release => m.release(),
            };
            assert_eq!(view(&out), *want, "step {i}");
            let name = match m.state {
                State::Init => "init",
                State::Selecting => "selecting",
                State::Requesting(_) => "requesting",
                State::Bound => "bound",
                State::Renewing => "renewing",
                State::Rebinding => "rebinding",
            };
            assert_eq!(name, *state, "step {i}");
        }
    }

    #[test]
    fn full_lease_cycle() {
        // Lease 100 s: T1 = 50, T2 = 87.
        run(&[
            (0, Ev::Start, &["D"], "selecting"),
            (1, Ev::Offer(7, [10, 0, 2, 15]), &[], "selecting"), // wrong xid
            (1, Ev::Offer(101, [10, 0, 2, 15]), &["R"], "requesting"),
            (2, Ev::Ack(101, [10, 0, 2, 15]), &["+10.0.2.15"], "bound"),
            (30, Ev::Tick, &[], "bound"),        // before T1
            (52, Ev::Tick, &["R>"], "renewing"), // T1: unicast
            (53, Ev::Ack(102, [10, 0, 2, 15]), &["+10.0.2.15"], "bound"),
            (103, Ev::Tick, &["R>"], "renewing"), // T1 again
            (140, Ev::Tick, &["R"], "rebinding"), // T2 = 53 + 87
            (152, Ev::Tick, &[], "rebinding"),    // not due
            (153, Ev::Tick, &["-10.0.2.15", "D"], "selecting"), // lease over
        ]);
    }

    #[test]
    fn retransmits_and_naks() {
        run(&[
            (0, Ev::Start, &["D"], "selecting"),
            (4, Ev::Tick, &["D"], "selecting"),
            (11, Ev::Tick, &[], "selecting"), // backoff 8 s: due at 12
            (12, Ev::Tick, &["D"], "selecting"),
            (13, Ev::Offer(101, [10, 0, 2, 15]), &["R"], "requesting"),
            (17, Ev::Tick, &["R"], "requesting"),
            (18, Ev::Nak(101), &["D"], "selecting"),
            (19, Ev::Offer(102, [10, 0, 2, 16]), &["R"], "requesting"),
            (20, Ev::Ack(102, [10, 0, 2, 16]), &["+10.0.2.16"], "bound"),
            (71, Ev::Tick, &["R>"], "renewing"),
            (72, Ev::Nak(103), &["-10.0.2.16", "D"], "selecting"),
        ]);
    }

    #[test]
    fn new_address_on_renewal_replaces_the_old() {
        run(&[
            (0, Ev::Start, &["D"], "selecting"),
            (1, Ev::Offer(101, [10, 0, 2, 15]), &["R"], "requesting"),
            (2, Ev::Ack(101, [10, 0, 2, 15]), &["+10.0.2.15"], "bound"),
            (52, Ev::Tick, &["R>"], "renewing"),
            (
                53,
                Ev::Ack(102, [10, 0, 2, 20]),
                &["-10.0.2.15", "+10.0.2.20"],
                "bound",
            ),
            (54, Ev::Release, &["X>", "-10.0.2.20"], "init"),
            (55, Ev::Release, &[], "init"),
        ]);
    }

    #[test]
    fn requesting_gives_up_after_four_tries() {
        run(&[
            (0, Ev::Start, &["D"], "selecting"),
            (1, Ev::Offer(101, [10, 0, 2, 15]), &["R"], "requesting"),
            (5, Ev::Tick, &["R"], "requesting"),
            (13, Ev::Tick, &["R"], "requesting"),
            (29, Ev::Tick, &["R"], "requesting"),
            (61, Ev::Tick, &["D"], "selecting"),
        ]);
    }
}
