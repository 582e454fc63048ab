//! `wasi:sockets/ip-name-lookup` that knows the cluster's names.
//!
//! wasmtime-wasi resolves every name with the host's resolver, which knows nothing of
//! `hello.default.svc.cluster.local`. The runtime shadows the interface in its linker:
//! names of the cluster (as the pod's DNS search path would expand them) come from the
//! node's DNS data, through the same [`NameResolver`] outgoing wasi:http uses; address
//! literals are returned as they are; every other name goes to the host's resolver, as
//! wasmtime-wasi would do. So a component that opens a TCP or UDP socket to a Service by
//! name (`std::net::TcpStream::connect("hello:80")`, wasi-libc's `getaddrinfo`) reaches
//! it with no configuration.

use std::net::IpAddr;

use futures::FutureExt;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress};
use wasmtime_wasi::p2::{DynPollable, Network, Pollable, subscribe};

use crate::host::{Host, NameResolver};

/// The interface as wasmtime-wasi 48 defines it; guests importing an earlier 0.2 version
/// are matched to it by semver.
const INTERFACE: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// A name lookup in progress or done (the `resolve-address-stream` resource).
pub struct Lookup {
    state: State,
}

enum State {
    Pending(tokio::task::JoinHandle<Result<Vec<IpAddr>, ErrorCode>>),
    Done(Result<std::vec::IntoIter<IpAddr>, ErrorCode>),
}

impl Lookup {
    fn done(r: Result<Vec<IpAddr>, ErrorCode>) -> Lookup {
        Lookup {
            state: State::Done(r.map(Vec::into_iter)),
        }
    }

    /// Moves a finished host lookup into `Done`; `false` while it runs.
    fn settle(&mut self) -> bool {
        let State::Pending(task) = &mut self.state else {
            return true;
        };
        let Some(r) = task.now_or_never() else {
            return false;
        };
        self.state = State::Done(r.unwrap_or(Err(ErrorCode::Unknown)).map(Vec::into_iter));
        true
    }
}

#[async_trait::async_trait]
impl Pollable for Lookup {
    async fn ready(&mut self) {
        if let State::Pending(task) = &mut self.state {
            let r = task.await.unwrap_or(Err(ErrorCode::Unknown));
            self.state = State::Done(r.map(Vec::into_iter));
        }
    }
}

/// Starts resolving `name` for a pod of `namespace`.
fn resolve(name: &str, namespace: &str, resolver: Option<&NameResolver>) -> Lookup {
    // IDNA and syntax as wasmtime-wasi checks them (`url::Host`), plus bare IPv6.
    let domain = match url::Host::parse(name) {
        Ok(url::Host::Domain(d)) => d,
        Ok(url::Host::Ipv4(a)) => return Lookup::done(Ok(vec![IpAddr::V4(a)])),
        Ok(url::Host::Ipv6(a)) => return Lookup::done(Ok(vec![IpAddr::V6(a)])),
        Err(_) => match name.parse::<std::net::Ipv6Addr>() {
            Ok(a) => return Lookup::done(Ok(vec![IpAddr::V6(a)])),
            Err(_) => return Lookup::done(Err(ErrorCode::InvalidArgument)),
        },
    };
    if let Some(ip) = resolver.and_then(|r| r(&domain, namespace)) {
        return Lookup::done(Ok(vec![ip]));
    }
    Lookup {
        state: State::Pending(tokio::spawn(async move {
            tokio::net::lookup_host((domain.as_str(), 0))
                .await
                .map(|addrs| addrs.map(|a| a.ip().to_canonical()).collect())
                .map_err(|e| {
                    tracing::debug!(name = %domain, error = %e, "name lookup failed");
                    ErrorCode::NameUnresolvable
                })
        })),
    }
}

/// Replaces wasmtime-wasi's `ip-name-lookup` in `linker` (which already holds WASI).
pub fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut i = linker.instance(INTERFACE)?;
    i.resource(
        "resolve-address-stream",
        ResourceType::host::<Lookup>(),
        |mut store, rep| {
            store
                .data_mut()
                .table
                .delete(Resource::<Lookup>::new_own(rep))?;
            Ok(())
        },
    )?;
    i.func_wrap(
        "resolve-addresses",
        |mut store, (network, name): (Resource<Network>, String)| {
            let host = store.data_mut();
            // The network handle is the capability to look names up.
            host.table.get(&network)?;
            let lookup = if host.hooks.allow_outbound {
                resolve(&name, &host.hooks.namespace, host.hooks.resolver.as_ref())
            } else {
                Lookup::done(Err(ErrorCode::PermanentResolverFailure))
            };
            if let State::Done(Err(e)) = lookup.state {
                return Ok((Err(e),));
            }
            Ok((Ok(host.table.push(lookup)?),))
        },
    )?;
    i.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store, (this,): (Resource<Lookup>,)| {
            let lookup = store.data_mut().table.get_mut(&this)?;
            if !lookup.settle() {
                return Ok((Err(ErrorCode::WouldBlock),));
            }
            let r: Result<Option<IpAddress>, ErrorCode> = match &mut lookup.state {
                State::Done(Ok(addrs)) => Ok(addrs.next().map(IpAddress::from)),
                State::Done(Err(e)) => Err(*e),
                State::Pending(_) => Err(ErrorCode::WouldBlock),
            };
            Ok((r,))
        },
    )?;
    i.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store, (this,): (Resource<Lookup>,)| {
            let pollable: Resource<DynPollable> = subscribe(&mut store.data_mut().table, this)?;
            Ok((pollable,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
