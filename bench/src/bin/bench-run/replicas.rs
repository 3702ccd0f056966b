//! `--postgres`: Get (`minimize_latency`) on one PostgreSQL replica, then on three replicas of
//! the same schema at once, in the same round, to see whether replicas add throughput. The
//! replicas are the PostgreSQL server of the main rounds and two more started here.
//!
//! h2load drives one host and port per process, so the three replicas get one h2load each, all
//! at once, and their rates are summed. Both sides have 33 calls in flight over 3 connections
//! and 3 load generator threads (one h2load thread saturates before a replica does): one
//! replica `-c 3 -m 11 -t 3`, each of the three `-c 1 -m 11 -t 1`.

use crate::h2load::{self, Shape};
use crate::servers::Server;
use crate::{Bench, Bodies, Rpc, Sample, block_on, progress};

const ONE_REPLICA: Shape = Shape {
    connections: 3,
    streams: 11,
    threads: 3,
};
const EACH_OF_THREE: Shape = Shape {
    connections: 1,
    streams: 11,
    threads: 1,
};

/// One round: the same Get on one replica, then on three.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub round: usize,
    pub one: Sample,
    pub three: Sample,
}

impl Bench {
    /// Starts two more replicas on `url` beside `first`, runs the rounds, stops the two.
    pub(crate) fn replicas(&self, first: &Server, url: &str, bodies: &Bodies) -> Vec<Round> {
        let others: Vec<Server> = (1..3)
            .map(|index| {
                block_on(Server::provisiond_postgres(
                    &self.tools.provisiond,
                    url,
                    &self.work.join(format!("provisiond-replica-{index}.log")),
                ))
            })
            .collect();
        let rpc = Rpc::GetMinimizeLatency;
        let body = bodies.of(rpc);
        for replica in &others {
            h2load::check_status_ok(replica, rpc.method(), body);
        }
        let all: Vec<&Server> = std::iter::once(first).chain(&others).collect();
        let warm_up = std::time::Duration::from_secs(self.args.warm_up);
        let duration = std::time::Duration::from_secs(self.args.seconds);
        let log = self.work.join("h2load-replicas.log");
        let mut rounds = Vec::new();
        for round in 1..=self.args.rounds {
            let one = h2load::run_parallel(
                &[first],
                ONE_REPLICA,
                rpc.method(),
                body,
                warm_up,
                duration,
                &log,
            );
            let three = h2load::run_parallel(
                &all,
                EACH_OF_THREE,
                rpc.method(),
                body,
                warm_up,
                duration,
                &log,
            );
            progress(format!(
                "round {round} replicas: one {:.0}/s p99 {:.2} ms | three {:.0}/s p99 {:.2} ms | ratio {:.2}",
                one.rps,
                one.p99_us / 1000.0,
                three.rps,
                three.p99_us / 1000.0,
                three.rps / one.rps
            ));
            rounds.push(Round { round, one, three });
        }
        for replica in others {
            replica.stop();
        }
        rounds
    }
}
