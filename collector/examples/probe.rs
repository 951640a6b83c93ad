use collector::source::{EventSource, PlatformSource, SourceOptions};
#[tokio::main]
async fn main() {
    let opts = SourceOptions { buffer_bytes: 1 << 24, connect_outcome_wait: std::time::Duration::from_millis(500), cgroup_root: None };
    let mut s = match PlatformSource::start(&opts) { Ok(s) => s, Err(e) => { eprintln!("{e}"); std::process::exit(1) } };
    println!("existing: {}", s.existing_processes().unwrap().len());
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(8);
    while tokio::time::Instant::now() < deadline {
        if tokio::time::timeout(std::time::Duration::from_secs(1), s.next_batch(&mut out)).await.is_err() { continue; }
        for e in out.drain(..) { println!("{e:?}"); }
    }
    println!("{:?}", s.stats());
}
