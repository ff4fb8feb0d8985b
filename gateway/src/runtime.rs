//! The tokio runtime a node runs on, with an optional *idle poll*: a node that runs out of
//! work keeps polling for new events for a short window before it goes to sleep.
//!
//! Why: on a virtual machine an idle CPU halts, and waking it for the next packet costs tens of
//! µs — paid once per process on a relay chain, per direction. A node that polls for a few
//! hundred µs after its last event is still running when the answer to what it just forwarded
//! comes back, so neither it nor its CPU has to be woken. HAProxy's `busy-polling` and Seastar's
//! `--idle-poll-time-us` do the same, for the same reason; the kernel's `haltpoll` idle driver
//! does it one level down, where a host enables it. The price is CPU: a node with traffic polls
//! instead of sleeping between events, and an idle one polls for one window after each timer.
//! So it is off by default, like HAProxy's.
//!
//! How: tokio's IO driver sleeps in `epoll_wait` on its own epoll instance. Just before the
//! thread parks (`on_thread_park`) it polls a second epoll instance that watches the driver's,
//! which becomes readable as soon as the driver has an event to deliver, without taking the
//! event from it. Then the thread parks as usual and the driver finds the event at once. Timers
//! are not watched: one may fire up to one window late, which no timer of ours minds.
//!
//! Idle poll needs the current-thread scheduler (one thread): it calls the park hook every time
//! it parks. The multi-threaded one calls it only on the first park after running tasks, and
//! parks again without it when woken by an event no task waits for (a socket turning writable
//! after every send), so polling there would cost CPU and save nothing — measured, not guessed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustix::event::{Timespec, epoll};
use tokio::runtime::{Builder, Runtime};

/// How a node's runtime is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuntimeOptions {
    /// Worker threads; `None` is tokio's default, one per CPU core.
    pub threads: Option<usize>,
    /// How long the thread polls for new events before it sleeps; zero never polls. Needs
    /// `threads: Some(1)`.
    pub idle_poll: Duration,
}

/// Build the runtime a node runs on: the current-thread scheduler for one thread, the
/// multi-threaded one otherwise; with idle poll if asked (one thread only).
pub fn build(options: RuntimeOptions) -> io::Result<Runtime> {
    if !options.idle_poll.is_zero() && options.threads != Some(1) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "idle poll needs one worker thread (--threads 1): the multi-threaded scheduler \
             sleeps again without polling whenever an event wakes no task",
        ));
    }
    // One thread: the current-thread scheduler, which runs tasks on the thread that drives the
    // node, with no hand-over to a worker. It also calls the park hook on every park, where
    // the multi-threaded one calls it only on the first after running tasks.
    let mut builder = match options.threads {
        Some(1) => Builder::new_current_thread(),
        Some(n) => {
            let mut builder = Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => Builder::new_multi_thread(),
    };
    builder.enable_all();
    if options.idle_poll.is_zero() {
        return builder.build();
    }
    let watch: Arc<OnceLock<OwnedFd>> = Arc::default();
    let window = options.idle_poll;
    let hook = Arc::clone(&watch);
    builder.on_thread_park(move || {
        if let Some(watch) = hook.get() {
            poll_until_ready(watch.as_fd(), window);
        }
    });
    let runtime = builder.build()?;
    // Set before the runtime runs anything, so every park from the first one polls.
    let _ = watch.set(watch_driver(&runtime)?);
    Ok(runtime)
}

/// An epoll instance that is readable whenever `runtime`'s IO driver has an event to deliver.
fn watch_driver(runtime: &Runtime) -> io::Result<OwnedFd> {
    let driver = driver_epoll(runtime)?;
    // SAFETY: `driver` is the epoll descriptor the runtime owns and keeps open while it is
    // alive; it is only borrowed here, to register it. (Once the runtime closes it, the kernel
    // drops it from our instance, which then never turns readable.)
    #[allow(unsafe_code)]
    let driver = unsafe { BorrowedFd::borrow_raw(driver) };
    let watch = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(&watch, driver, epoll::EventData::new_u64(0), epoll::EventFlags::IN)?;
    Ok(watch)
}

/// The epoll descriptor of `runtime`'s IO driver: the one in which a socket registered with the
/// runtime shows up (`/proc/self/fdinfo` lists what each epoll instance watches). Other
/// runtimes in the process have their own and do not watch this socket.
fn driver_epoll(runtime: &Runtime) -> io::Result<RawFd> {
    let probe = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    probe.set_nonblocking(true)?;
    let fd = probe.as_raw_fd();
    let _in_runtime = runtime.enter();
    let _registered = tokio::net::UdpSocket::from_std(probe)?;
    for epoll in epoll_fds()? {
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{epoll}")) else { continue };
        let watches = info.lines().any(|line| {
            line.strip_prefix("tfd:")
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|n| n.parse() == Ok(fd))
        });
        if watches {
            return Ok(epoll);
        }
    }
    Err(io::Error::other("idle poll: cannot find the runtime's epoll instance in /proc/self"))
}

/// Poll `watch` until it has an event (true) or `window` has passed (false). Between polls the
/// thread yields, so that a process woken on this CPU runs at once.
fn poll_until_ready(watch: BorrowedFd<'_>, window: Duration) -> bool {
    let deadline = Instant::now() + window;
    let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
    let mut events = [epoll::Event { flags: epoll::EventFlags::empty(), data: epoll::EventData::new_u64(0) }];
    loop {
        match epoll::wait(watch, &mut events[..], Some(&zero)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => {}
            Ok(_) => return true,
            // Cannot happen with a valid epoll descriptor; park as usual.
            Err(_) => return false,
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::yield_now();
    }
}

/// The process's open epoll descriptors.
fn epoll_fds() -> io::Result<Vec<RawFd>> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        if target.as_os_str() == "anon_inode:[eventpoll]"
            && let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok())
        {
            fds.push(fd);
        }
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our watch on a runtime's driver turns ready when a socket of that runtime receives a
    /// datagram, and not before. A current-thread runtime outside `block_on` never takes the
    /// event itself, so nothing races the check.
    #[test]
    fn the_watch_sees_the_drivers_events_without_taking_them() {
        let other =
            build(RuntimeOptions { threads: Some(1), idle_poll: Duration::ZERO }).expect("other runtime");
        let runtime = Builder::new_current_thread().enable_all().build().expect("runtime");
        let watch = watch_driver(&runtime).expect("watch the driver's epoll");

        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        let addr = socket.local_addr().expect("addr");
        let socket = {
            let _in_runtime = runtime.enter();
            tokio::net::UdpSocket::from_std(socket).expect("register")
        };
        // Registering reports the socket writable; let the driver take that event first.
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(1)).await });
        assert!(!poll_until_ready(watch.as_fd(), Duration::from_millis(2)), "nothing arrived yet");

        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        sender.send_to(b"ping", addr).expect("send");
        assert!(poll_until_ready(watch.as_fd(), Duration::from_secs(10)), "the datagram is an event");
        // The driver still has the event: the socket's task gets it.
        let mut buf = [0u8; 8];
        let (n, _) = runtime.block_on(socket.recv_from(&mut buf)).expect("recv");
        assert_eq!(&buf[..n], b"ping");
        drop(other);
    }

    /// With more than one worker the park hook would not run on every park: refused, with why.
    #[test]
    fn idle_poll_is_refused_with_several_workers() {
        for threads in [None, Some(2)] {
            let refused = build(RuntimeOptions { threads, idle_poll: Duration::from_micros(200) })
                .expect_err("several workers cannot idle-poll");
            assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
            assert!(refused.to_string().contains("--threads 1"), "{refused}");
        }
    }

    /// A runtime that polls before parking runs IO and timers like any other.
    #[test]
    fn an_idle_polling_runtime_serves_io_and_timers() {
        let runtime = build(RuntimeOptions { threads: Some(1), idle_poll: Duration::from_micros(200) })
            .expect("runtime");
        let echoed = runtime.block_on(async {
            let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            let server_addr = server.local_addr()?;
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                for _ in 0..100 {
                    let (n, from) = server.recv_from(&mut buf).await?;
                    server.send_to(&buf[..n], from).await?;
                }
                io::Result::Ok(())
            });
            let mut echoed = Vec::new();
            let mut buf = [0u8; 64];
            for i in 0u8..100 {
                client.send_to(&[i], server_addr).await?;
                let n = client.recv(&mut buf).await?;
                echoed.extend_from_slice(&buf[..n]);
                if i % 25 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            io::Result::Ok(echoed)
        });
        assert_eq!(echoed.expect("echo"), (0u8..100).collect::<Vec<_>>());
    }
}
