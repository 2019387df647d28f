//! dlb the way GitLab's container registry uses it: push a tag (a write on the primary),
//! record the primary's LSN for the repository path, then list the repository's tags from a
//! replica that has replayed that write, or from the primary when none has.
//!
//! Run: `eval "$(bash scripts/testenv.sh env)"; cargo run --example registry`
//! (reads the cluster from `DLB_TEST_PRIMARY` and `DLB_TEST_REPLICAS`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dlb::{Balancer, Config};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |k: &str| {
        std::env::var(k).map_err(|_| format!("{k} is not set (see scripts/testenv.sh env)"))
    };
    let config = Config::builder(var("DLB_TEST_PRIMARY")?)
        .replica_hosts(var("DLB_TEST_REPLICAS")?.split(',').map(str::to_string))
        .replica_check_interval(Duration::from_millis(200))
        .build()?;
    let lb = Balancer::new(config)?;

    let repo = "gitlab-org/container-registry";
    let key = format!("repo:{repo}");
    let tag = format!(
        "v{}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis()
    );

    // The write: on the primary.
    let mut primary = lb.write_conn()?;
    primary.batch_execute(
        "CREATE TABLE IF NOT EXISTS dlb_example_tags (repo text NOT NULL, name text NOT NULL, \
         created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (repo, name))",
    )?;
    primary.execute(
        "INSERT INTO dlb_example_tags (repo, name) VALUES ($1, $2)",
        &[&repo, &tag],
    )?;
    drop(primary);

    // Remember where the WAL was for this repository (also a causal token to carry).
    let lsn = lb.record_lsn(&key)?;
    println!("pushed {repo}:{tag}; recorded LSN {lsn} for {key}");

    // The read: only a replica that has replayed the push may answer.
    let mut conn = lb.read_conn(Some(&key))?;
    let tags: Vec<String> = conn
        .query(
            "SELECT name FROM dlb_example_tags WHERE repo = $1 ORDER BY name",
            &[&repo],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    println!("listed {} tag(s) via {}", tags.len(), conn.route());
    if !tags.contains(&tag) {
        return Err(format!("stale read: {tag} missing via {}", conn.route()).into());
    }
    println!("the new tag {tag} is there: read-your-writes held");
    Ok(())
}
