//! The hub's task: the one loop that owns the `Hub`, feeds it inputs and timers, persists its
//! changes (one transaction per batch, waiting while the store is unreachable) before
//! performing its other actions, and logs its events.

use super::*;

/// What the hub task performs actions on.
pub(super) struct Outlets {
    pub(super) signer: Signer,
    pub(super) writers: HashMap<ConnId, Writer>,
    pub(super) verify: Sender<VerifyJob>,
    pub(super) events: Option<Sender<HubEvent>>,
    pub(super) relay: Option<Box<dyn FnMut(RelayCommand) + Send>>,
    pub(super) queue_limit: usize,
}

pub(super) async fn hub_task(
    mut hub: Hub,
    mut store: Box<dyn Store>,
    input: Receiver<Input>,
    mut outlets: Outlets,
) -> io::Result<()> {
    let mut shutting_down = false;
    // Changes left over from `load` (pending commands finished as failed) come first.
    let mut actions: Vec<HubAction> = Vec::new();
    loop {
        while let Some(a) = hub.poll_action() {
            actions.push(a);
        }
        if !actions.is_empty() {
            store = outlets
                .persist_then_perform(store, &mut hub, &mut actions)
                .await?;
            continue; // performing may close slow consumers, which produces actions
        }
        if shutting_down {
            // Dropping the writers lets the connection tasks flush their Byes and close.
            outlets.writers.clear();
            return Ok(());
        }
        let deadline = hub.poll_timeout();
        let next = async { input.recv().await.ok().map(Some) };
        let timer = async {
            match deadline {
                Some(d) => {
                    async_io::Timer::at(d).await;
                    Some(None)
                }
                None => std::future::pending().await,
            }
        };
        let got = next.or(timer).await;
        let now = Instant::now();
        match got {
            None => return Ok(()), // every sender is gone
            Some(None) => {}
            Some(Some(first)) => {
                outlets.apply_input(&mut hub, now, first, &mut shutting_down);
                // Take what else is waiting, so that persists batch up.
                for _ in 0..1024 {
                    match input.try_recv() {
                        Ok(i) => outlets.apply_input(&mut hub, now, i, &mut shutting_down),
                        Err(_) => break,
                    }
                }
            }
        }
        hub.handle_timeout(now);
    }
}

impl Outlets {
    fn apply_input(&mut self, hub: &mut Hub, now: Instant, input: Input, shutting_down: &mut bool) {
        match input {
            Input::Accepted { conn, peer, tx, kv } => {
                if *shutting_down {
                    return;
                }
                self.writers.insert(conn, tx);
                match kv {
                    Some(cfg) => hub.accept_kv(now, conn, peer, cfg),
                    None => hub.accept(now, conn, peer),
                }
            }
            Input::Relay(ev) => hub.handle_relay_event(now, ev),
            Input::Data { conn, bytes } => hub.handle_input(now, conn, &bytes),
            Input::Closed { conn } => {
                self.writers.remove(&conn);
                hub.handle_closed(now, conn);
            }
            Input::Verified { ticket, ok } => hub.handle_verified(now, ticket, ok),
            Input::Signed { ticket, result } => hub.handle_signed(now, ticket, result),
            Input::Shutdown => {
                *shutting_down = true;
                hub.shutdown(now);
            }
        }
    }

    /// Applies every Persist of the batch (one transaction, off the loop), then performs the
    /// other actions in order.
    async fn persist_then_perform(
        &mut self,
        store: Box<dyn Store>,
        hub: &mut Hub,
        actions: &mut Vec<HubAction>,
    ) -> io::Result<Box<dyn Store>> {
        let changes: Vec<Change> = actions
            .iter()
            .filter_map(|a| match a {
                HubAction::Persist(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        let store = if changes.is_empty() {
            store
        } else {
            // An unreachable store is waited for (nothing is acknowledged meanwhile), then the
            // same batch is retried: the store recognises one that did commit.
            let mut store = store;
            let mut delay = Duration::from_millis(100);
            loop {
                let batch = changes.clone();
                let (s, result) = smol::unblock(move || {
                    let mut store = store;
                    let r = store.apply_all(&batch);
                    (store, r)
                })
                .await;
                store = s;
                match result {
                    Ok(()) => break,
                    Err(e) if e.is_unavailable() => {
                        tracing::warn!(error = %e, retry_in = ?delay, "the store is unreachable: waiting, nothing is acknowledged meanwhile");
                        async_io::Timer::after(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "storage failed: stopping the hub without acknowledging");
                        return Err(io::Error::other(e));
                    }
                }
            }
            store
        };
        let mut store = store;
        let now = Instant::now();
        for action in actions.drain(..) {
            match action {
                HubAction::Persist(_) => {}
                HubAction::ReadEvents {
                    conn,
                    after_order,
                    limit,
                } => {
                    // Only lagging subscribers read (recent events are in memory): rare and
                    // small, done off the loop like the persists.
                    let (s, r) = smol::unblock(move || {
                        let r = store.read_events(after_order, limit);
                        (store, r)
                    })
                    .await;
                    store = s;
                    match r {
                        Ok(events) => hub.handle_events_read(conn, events),
                        Err(e) => {
                            tracing::error!(error = %e, "reading the event log failed");
                            hub.handle_closed(now, conn);
                            self.writers.remove(&conn);
                        }
                    }
                }
                HubAction::Send { conn, bytes } => {
                    if let Some(w) = self.writers.get(&conn) {
                        let len = bytes.len();
                        if w.queued.fetch_add(len, Ordering::Relaxed) + len > self.queue_limit {
                            tracing::warn!(?conn, "peer does not read fast enough: closing");
                            self.writers.remove(&conn);
                            hub.handle_closed(now, conn);
                        } else if w.tx.try_send(bytes).is_err() {
                            self.writers.remove(&conn);
                        }
                    }
                }
                HubAction::Close { conn, reason } => {
                    tracing::debug!(?conn, %reason, "closing connection");
                    // Dropping the sender lets the writer flush what is queued, then close.
                    self.writers.remove(&conn);
                }
                HubAction::VerifySecret {
                    ticket,
                    secret_hash,
                    secret,
                } => {
                    let _ = self.verify.try_send(VerifyJob {
                        ticket,
                        hash: secret_hash,
                        secret,
                    });
                }
                HubAction::SignCertificate {
                    ticket,
                    name,
                    csr_der,
                } => self.signer.sign(ticket, name, csr_der),
                HubAction::Relay(cmd) => match self.relay.as_mut() {
                    Some(send) => send(cmd),
                    None => {
                        tracing::debug!(?cmd, "no relay attached: membership change not forwarded")
                    }
                },
                HubAction::Event(e) => {
                    log_event(&e);
                    if let Some(tx) = &self.events {
                        let _ = tx.try_send(e);
                    }
                }
            }
        }
        Ok(store)
    }
}

/// Signs agents' certificate renewals with the CA, off the hub loop.
pub(super) struct Signer {
    pub(super) ca: Option<Arc<pki::Ca>>,
    pub(super) days: u32,
    pub(super) input: Sender<Input>,
}

impl Signer {
    fn sign(&self, ticket: SignTicket, name: String, csr_der: Vec<u8>) {
        let (ca, days, input) = (self.ca.clone(), self.days, self.input.clone());
        smol::spawn(async move {
            let result = match ca {
                None => Err("this hub does not renew certificates".to_string()),
                Some(ca) => {
                    smol::unblock(move || {
                        let pem = ca
                            .sign_client_csr(&name, &csr_der, days)
                            .map_err(|e| e.to_string())?;
                        let id = pki::IssuedCert {
                            cert_pem: pem.clone(),
                            key_pem: String::new(),
                        }
                        .identity()
                        .map_err(|e| e.to_string())?;
                        Ok(SignedCertificate {
                            certificate_pem: pem,
                            serial: id.serial,
                            not_after_unix_ms: id.not_after_unix.saturating_mul(1000),
                        })
                    })
                    .await
                }
            };
            let _ = input.send(Input::Signed { ticket, result }).await;
        })
        .detach();
    }
}

fn log_event(e: &HubEvent) {
    match e {
        HubEvent::CertificateIssued {
            name,
            serial,
            not_after_unix_ms,
        } => {
            tracing::info!(agent = %name, %serial, not_after_unix_ms, "certificate renewed")
        }
        HubEvent::CertificateRevoked { name, serial } => {
            tracing::warn!(%name, %serial, "certificate revoked")
        }
        HubEvent::AgentConnected { agent_id, addr, .. } => {
            tracing::info!(agent = %agent_id, %addr, "agent connected")
        }
        HubEvent::AgentDisconnected { agent_id, reason } => {
            tracing::info!(agent = %agent_id, %reason, "agent disconnected")
        }
        HubEvent::AuthFailed {
            agent_id,
            addr,
            reason,
        } => {
            tracing::warn!(agent = %agent_id, %addr, %reason, "agent authentication failed")
        }
        HubEvent::SessionOpened { user, .. } => tracing::info!(%user, "session opened"),
        HubEvent::CommandStarted {
            command_id,
            agent_id,
            operation,
        } => {
            tracing::info!(command_id, agent = %agent_id, %operation, "command started")
        }
        HubEvent::CommandProgress {
            command_id,
            current,
            total,
            message,
        } => {
            tracing::debug!(command_id, current, total, %message, "command progress")
        }
        HubEvent::CommandFinished {
            command_id, status, ..
        } => {
            tracing::info!(command_id, status = status.as_str(), "command finished")
        }
        HubEvent::ChannelCreated { chid, owner, port } => {
            tracing::info!(chid, owner, port, "channel created")
        }
        HubEvent::ChannelDeleted { chid } => tracing::info!(chid, "channel deleted"),
        HubEvent::MemberJoined { chid, uid } => tracing::info!(chid, uid, "member joined"),
        HubEvent::MemberLeft { chid, uid, expired } => {
            tracing::info!(chid, uid, expired, "member left")
        }
        HubEvent::MemberBound { chid, uid, addr } => {
            tracing::debug!(chid, uid, %addr, "member address bound")
        }
        HubEvent::ChannelFailed { chid, error } => {
            tracing::error!(chid, %error, "relay channel failed")
        }
        HubEvent::LoggedIn { user, .. } => tracing::info!(%user, "user logged in"),
        HubEvent::LoginFailed { user, reason } => tracing::warn!(%user, %reason, "login refused"),
        HubEvent::UserRegistered { uid } => tracing::info!(uid, "user registered"),
        HubEvent::AgentRegistered { agent_id } => {
            tracing::info!(agent = %agent_id, "agent enrolled")
        }
        HubEvent::AgentRemoved { agent_id } => tracing::info!(agent = %agent_id, "agent removed"),
        HubEvent::AgentDataSet { agent_id, name } => {
            tracing::info!(agent = %agent_id, %name, "agent data set")
        }
        HubEvent::FeedClientAdded { client_id, user } => {
            tracing::info!(client = %client_id, %user, "feed client added")
        }
        HubEvent::FeedClientRemoved { client_id } => {
            tracing::info!(client = %client_id, "feed client removed")
        }
        HubEvent::UserCredentialsSet { uid } => tracing::info!(uid, "user credentials set"),
        HubEvent::UserRemoved { uid } => tracing::info!(uid, "user removed"),
        HubEvent::ConnectionFailed { conn, reason } => {
            tracing::info!(?conn, %reason, "connection closed")
        }
    }
}
