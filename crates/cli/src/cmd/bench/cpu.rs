//! Where the nodes' CPU goes: the processes' total (from `/proc/<pid>/stat`),
//! each thread's time on the CPU by its name (`/proc/<pid>/task/*/schedstat`:
//! the `admission` threads verify signatures and admit, the `consensus`
//! thread runs PBFT, execution and ledger appends, the tokio workers serve
//! gRPC and TLS), and, from each node's `/metrics`, the consensus thread's
//! CPU time executing blocks and appending them and the CPU time verifying
//! signatures (on the calling thread, and on the threads a large batch is
//! spread over, which end before a sample could see them). Linux only: elsewhere a
//! sample is `None` and the report says so.

use std::time::Duration;

use serde::Serialize;

/// CPU seconds used so far, all nodes together.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Every thread of the processes, those that ended included.
    pub total: f64,
    pub admission: f64,
    pub consensus: f64,
    /// tokio's worker threads: gRPC, TLS, HTTP/2, the services.
    pub grpc: f64,
    /// Parts of `consensus`, from the nodes' metrics.
    pub execution: f64,
    pub ledger: f64,
    /// Verifying signatures, from the nodes' metrics: on the calling
    /// thread (mostly admission), and on spread threads.
    pub signature_caller: f64,
    pub signature_spread: f64,
}

impl Sample {
    /// What was used between `before` and `self`.
    pub fn since(&self, before: &Sample) -> Sample {
        let d = |a: f64, b: f64| (a - b).max(0.0);
        Sample {
            total: d(self.total, before.total),
            admission: d(self.admission, before.admission),
            consensus: d(self.consensus, before.consensus),
            grpc: d(self.grpc, before.grpc),
            execution: d(self.execution, before.execution),
            ledger: d(self.ledger, before.ledger),
            signature_caller: d(self.signature_caller, before.signature_caller),
            signature_spread: d(self.signature_spread, before.signature_spread),
        }
    }
}

/// Microseconds of one validator's CPU per committed transaction, by part.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Split {
    pub total: f64,
    /// Verifying signatures in batches (admission, peers' batches),
    /// measured by the nodes.
    pub signature: f64,
    /// The admission threads' time less the signatures verified on them:
    /// decoding, the precheck against state, the mempool, sealing.
    pub admission: f64,
    /// Building, assembling and checking blocks (execution included).
    pub execution: f64,
    /// Appending blocks to the ledger (CPU only; fsync waits are not CPU).
    pub ledger: f64,
    /// The consensus thread's time less execution and ledger: PBFT.
    pub consensus: f64,
    /// tokio's workers: gRPC, TLS, HTTP/2, the services, dissemination.
    pub grpc: f64,
    /// Everything else (the metrics and sync tasks' threads, the blob
    /// store, threads that ended).
    pub other: f64,
}

impl Split {
    /// `used` by `validators` nodes for `committed` transactions.
    pub fn new(used: &Sample, validators: usize, committed: u64) -> Self {
        if committed == 0 || validators == 0 {
            return Self::default();
        }
        let per = 1e6 / (validators as f64 * committed as f64);
        let total = used.total * per;
        let signature = (used.signature_caller + used.signature_spread) * per;
        let admission = (used.admission - used.signature_caller).max(0.0) * per;
        let execution = used.execution * per;
        let ledger = used.ledger * per;
        let consensus = (used.consensus * per - execution - ledger).max(0.0);
        let grpc = used.grpc * per;
        let threads = signature + admission + execution + ledger + consensus + grpc;
        // The process total counts 10 ms ticks, the threads nanoseconds:
        // when the threads add up to more, they are the better figure.
        let total = total.max(threads);
        let other = total - threads;
        Self {
            total,
            signature,
            admission,
            execution,
            ledger,
            consensus,
            grpc,
            other,
        }
    }
}

/// A sample of the processes `pids` (else this process's `govchain node`
/// children) and the metrics at `metrics_urls`; `None` when /proc does not
/// answer.
pub async fn sample(pids: &[u32], metrics_urls: &[String]) -> Option<Sample> {
    let pids: Vec<u32> = if pids.is_empty() {
        node_pids()
    } else {
        pids.to_vec()
    };
    if pids.is_empty() {
        return None;
    }
    let mut sample = Sample::default();
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        sample.total += process_seconds(&stat)?;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.filter_map(Result::ok) {
            let path = task.path();
            let (Ok(name), Ok(schedstat)) = (
                std::fs::read_to_string(path.join("comm")),
                std::fs::read_to_string(path.join("schedstat")),
            ) else {
                continue; // It ended meanwhile.
            };
            let Some(seconds) = schedstat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .map(|n| Duration::from_nanos(n).as_secs_f64())
            else {
                continue;
            };
            match name.trim() {
                "admission" => sample.admission += seconds,
                "consensus" => sample.consensus += seconds,
                // "tokio-rt-worker" (or "tokio-runtime-w" in older tokio).
                name if name.starts_with("tokio-r") => sample.grpc += seconds,
                _ => {}
            }
        }
    }
    for url in metrics_urls {
        if let Some(text) = scrape(url).await {
            sample.execution += metric(&text, "govchain_execution_cpu_seconds_total");
            sample.ledger += metric(&text, "govchain_ledger_append_cpu_seconds_total");
            sample.signature_caller += labeled(
                &text,
                "govchain_signature_cpu_seconds_total",
                "thread=\"caller\"",
            );
            sample.signature_spread += labeled(
                &text,
                "govchain_signature_cpu_seconds_total",
                "thread=\"spread\"",
            );
        }
    }
    Some(sample)
}

/// User and system time of a process, from its `stat` line (the kernel's
/// clock tick is 100 Hz on every distribution we run on).
fn process_seconds(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The sum of a metric's samples in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            // The name ends at labels or the value, not at a longer name.
            let rest = match rest.chars().next() {
                Some('{') => &rest[rest.find('}')? + 1..],
                Some(' ') => rest,
                _ => return None,
            };
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// The sum of a metric's samples whose labels include `label`.
pub fn labeled(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter_map(|line| {
            let labels = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = labels.split_once('}')?;
            labels
                .split(',')
                .any(|l| l.trim() == label)
                .then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
        })
        .sum()
}

/// `GET` a plain-HTTP metrics page (`http://host:port/metrics`), within a
/// second.
async fn scrape(url: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, "metrics"));
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await.ok()?;
        let request =
            format!("GET /{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8(response).ok()?;
        Some(text.split_once("\r\n\r\n")?.1.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(1), fetch)
        .await
        .ok()
        .flatten()
}

/// Child `govchain node` processes of this process.
pub fn node_pids() -> Vec<u32> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit(')')
                        .next()
                        .map(|rest| rest.split_whitespace().nth(1) == Some(me.as_str()))
                })
                .unwrap_or(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_by_exact_name() {
        let text = "# HELP govchain_execution_cpu_seconds_total x\n\
            govchain_execution_cpu_seconds_total{otel_scope_name=\"govchain\"} 1.5\n\
            govchain_execution_cpu_seconds_total_extra 9\n\
            govchain_ledger_append_cpu_seconds_total 0.25\n";
        assert_eq!(metric(text, "govchain_execution_cpu_seconds_total"), 1.5);
        assert_eq!(
            metric(text, "govchain_ledger_append_cpu_seconds_total"),
            0.25
        );
        assert_eq!(metric(text, "absent"), 0.0);
        let text = "govchain_signature_cpu_seconds_total{otel_scope_name=\"govchain\",thread=\"caller\"} 2\n\
            govchain_signature_cpu_seconds_total{thread=\"spread\",otel_scope_name=\"govchain\"} 0.5\n";
        let name = "govchain_signature_cpu_seconds_total";
        assert_eq!(labeled(text, name, "thread=\"caller\""), 2.0);
        assert_eq!(labeled(text, name, "thread=\"spread\""), 0.5);
        assert_eq!(labeled(text, name, "thread=\"other\""), 0.0);
    }

    #[test]
    fn a_split_accounts_for_the_whole() {
        // 4 validators, 1,000 transactions: 4 s of CPU is 1,000 µs each.
        let used = Sample {
            total: 4.0,
            admission: 1.0,
            consensus: 1.6,
            grpc: 0.8,
            execution: 0.8,
            ledger: 0.4,
            signature_caller: 0.2,
            signature_spread: 0.2,
        };
        let split = Split::new(&used, 4, 1_000);
        assert_eq!(split.total, 1_000.0);
        assert_eq!(split.signature, 100.0);
        assert_eq!(split.admission, 200.0);
        assert_eq!(split.execution, 200.0);
        assert_eq!(split.ledger, 100.0);
        assert_eq!(split.consensus, 100.0);
        assert_eq!(split.grpc, 200.0);
        assert_eq!(split.other, 100.0);
        let parts = split.signature
            + split.admission
            + split.execution
            + split.ledger
            + split.consensus
            + split.grpc
            + split.other;
        assert!((parts - split.total).abs() < 1e-9);
        assert_eq!(Split::new(&used, 4, 0), Split::default());
    }

    #[test]
    fn this_process_has_a_stat_line() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        if !stat.is_empty() {
            assert!(process_seconds(&stat).is_some());
        }
    }
}
