//! `codex-node`: run a Codex node, or talk to a running one.
//!
//! ```text
//! codex-node --data-dir ./data --api-port 8080        # run a node
//! codex-node upload FILE                              # store a file, print its CID
//! codex-node download CID -o FILE                     # fetch it back
//! codex-node list | space                             # what the node holds
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use codex::{Node, NodeConfig};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;

mod setup;

const DEFAULT_API: &str = "http://127.0.0.1:8080/api/codex/v1";

#[derive(Parser, Debug)]
#[command(
    name = "codex-node",
    version,
    about = "A Codex storage node and its client",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// A TOML file of node flags without their dashes (`data-dir = "d"`,
    /// `api-port = 8081`, `bootstrap-node = ["/ip4/..."]`, `validator = true`); flags
    /// given on the command line win.
    #[arg(long = "config-file")]
    config_file: Option<PathBuf>,
    /// Where the node keeps its data.
    #[arg(long, default_value = "codex-data")]
    data_dir: PathBuf,
    /// REST API port (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    api_port: u16,
    /// REST API address; keep 127.0.0.1 unless the API must be reachable from elsewhere
    /// (then set --api-token-file too).
    #[arg(long, default_value = "127.0.0.1")]
    api_bindaddr: IpAddr,
    /// A file holding the REST API's bearer token (mode 0600; the token never shows in
    /// the process list). The node then answers 401 to requests without
    /// `Authorization: Bearer TOKEN`; the client commands send it. Without the flag,
    /// the token is taken from CODEX_API_TOKEN when that is set.
    #[arg(long = "api-token-file", global = true)]
    api_token_file: Option<PathBuf>,
    /// Storage quota in bytes; suffixes K, M, G, T (powers of 1024) are accepted.
    #[arg(long, default_value = "20G", value_parser = parse_size)]
    storage_quota: u64,
    /// Block time-to-live in seconds.
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    block_ttl: u64,
    /// Seconds between sweeps of expired blocks.
    #[arg(long = "block-mi", default_value_t = 600)]
    block_maintenance_interval: u64,
    /// Expired blocks deleted per sweep.
    #[arg(long = "block-mn", default_value_t = 1000)]
    block_maintenance_batch: usize,
    /// Addresses to listen on for peers (repeatable; default TCP and QUIC on every
    /// interface, any port).
    #[arg(long = "listen-addrs")]
    listen_addrs: Vec<codex::net::Multiaddr>,
    /// A node to join the network through, as a multiaddr ending in /p2p/PEER_ID
    /// (repeatable).
    #[arg(long = "bootstrap-node")]
    bootstrap_nodes: Vec<codex::net::Multiaddr>,
    /// JSON-RPC URL of the chain the marketplace runs on (e.g. http://127.0.0.1:8545).
    #[arg(long = "eth-provider", requires_all = ["marketplace_address", "eth_private_key"])]
    eth_provider: Option<String>,
    /// Address of the marketplace contract.
    #[arg(long = "marketplace-address", requires = "eth_provider")]
    marketplace_address: Option<codex::market::alloy::primitives::Address>,
    /// The account's private key: a file holding it in hex (mode 0600), or the hex itself
    /// (visible in the process list: prefer a file). Never logged.
    #[arg(
        long = "eth-private-key",
        requires = "eth_provider",
        hide_env_values = true
    )]
    eth_private_key: Option<Secret>,
    /// The proving parameters for the marketplace's storage proofs: a powers-of-tau
    /// ceremony file (snarkjs `.ptau`; imported and checked on first use, then cached
    /// in the data directory) or parameters from `codex-node params import`. They must
    /// be those the marketplace's verifier was generated from. Required with the
    /// marketplace flags unless --dev-params is given.
    #[arg(long = "circuit-params", requires = "eth_provider")]
    circuit_params: Option<PathBuf>,
    /// Prove with the development setup, whose secret is public: every proof can be
    /// forged. For local development networks and tests only.
    #[arg(long = "dev-params", conflicts_with = "circuit_params")]
    dev_params: bool,
    /// Run without a network (local storage and API only).
    #[arg(long)]
    no_network: bool,
    /// Validate: mark other hosts' missing proofs (needs the marketplace flags).
    #[arg(long, requires = "eth_provider")]
    validator: bool,
    /// Split the slots into this many groups and validate one of them.
    #[arg(long = "validator-groups", requires = "validator")]
    validator_groups: Option<u64>,
    /// The group this validator watches (below --validator-groups).
    #[arg(
        long = "validator-group-index",
        default_value_t = 0,
        requires = "validator_groups"
    )]
    validator_group_index: u64,
    /// Slots watched at most.
    #[arg(long = "validator-max-slots", default_value_t = 1000)]
    validator_max_slots: usize,
    /// Log filter (`info`, `debug`, `codex=trace`, ...).
    #[arg(long, default_value = "info", env = "CODEX_LOG")]
    log_level: String,
}

/// A command-line value that `Debug` never shows (the marketplace key).
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upload a file to a running node and print its manifest CID.
    Upload {
        /// The file to store.
        file: PathBuf,
        /// MIME type to record (default: none).
        #[arg(long)]
        mime: Option<String>,
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
    },
    /// Download a dataset from a running node into a file.
    Download {
        /// The manifest CID.
        cid: String,
        /// Where to write it.
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
    },
    /// Erasure-code a dataset stored in a running node; prints the protected manifest CID.
    Erasure {
        /// The manifest CID of a plain dataset.
        cid: String,
        /// Data rows (K >= 1).
        #[arg(long)]
        k: usize,
        /// Parity rows (M >= 1): any M slots may be lost.
        #[arg(long)]
        m: usize,
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
    },
    /// Make a dataset in a running node verifiable (erasure coding when it is plain, then
    /// Poseidon2 slot trees); prints the verifiable manifest CID and the verify root.
    Verifiable {
        /// The manifest CID (plain or protected).
        cid: String,
        /// Data rows, when the dataset is plain (default 2).
        #[arg(long, default_value_t = 2)]
        k: usize,
        /// Parity rows, when the dataset is plain (default 1).
        #[arg(long, default_value_t = 1)]
        m: usize,
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
    },
    /// Storage-proof inputs in Codex's circuit-input JSON.
    ProofInput {
        #[command(subcommand)]
        command: ProofInputCommand,
    },
    /// Proving parameters from a powers-of-tau ceremony: import, check.
    Params {
        #[command(subcommand)]
        command: setup::ParamsCommand,
    },
    /// Run a powers-of-tau ceremony in snarkjs's format: start, contribute, verify.
    Ceremony {
        #[command(subcommand)]
        command: setup::CeremonyCommand,
    },
    /// List the datasets a running node stores.
    List {
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
    },
    /// Show a running node's quota and usage.
    Space {
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
    },
}

/// The proving parameters from `--circuit-params FILE` or `--dev-params`; an error
/// naming both when there is neither.
fn srs(circuit_params: Option<PathBuf>, dev_params: bool) -> anyhow::Result<codex::proofs::Srs> {
    match (circuit_params, dev_params) {
        (Some(path), _) => Ok(codex::proofs::Srs::File(path)),
        (None, true) => {
            eprintln!(
                "WARNING: --dev-params: proving with the development setup, whose secret is public: every proof can be forged"
            );
            Ok(codex::proofs::Srs::Development)
        }
        (None, false) => bail!(
            "storage proofs need proving parameters: pass --circuit-params FILE (a powers-of-tau ceremony file, or parameters from `codex-node params import`), or --dev-params on a development network (proofs anyone can forge)"
        ),
    }
}

#[derive(Subcommand, Debug)]
enum ProofInputCommand {
    /// Parse a circuit-input JSON (ours or made by Codex's tools) and check it natively:
    /// the sample indices follow from entropy and slot root, every path reaches the slot
    /// root, the slot proof reaches the dataset root. Prints the sample indices.
    Check {
        /// The JSON file.
        file: PathBuf,
    },
    /// Prove a circuit-input JSON (any input `check` accepts) with the halo2 circuit,
    /// verify the proof, and print the public inputs, the proof size and the times.
    Prove {
        /// The JSON file.
        file: PathBuf,
        /// The proving parameters: a powers-of-tau ceremony file (snarkjs `.ptau`) or
        /// parameters from `codex-node params import`.
        #[arg(long = "circuit-params", alias = "params")]
        circuit_params: Option<PathBuf>,
        /// Prove with the development setup (its proofs can be forged).
        #[arg(long = "dev-params", conflicts_with = "circuit_params")]
        dev_params: bool,
        /// Where keys and development parameters are cached.
        #[arg(long, env = "CODEX_PROOF_CACHE")]
        cache_dir: Option<PathBuf>,
        /// Write the proof (hex) to this file.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches(['i', 'I']);
    let (digits, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {text:?}"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size too large: {text:?}"))
}

/// The API token: the contents of `--api-token-file` (trimmed), else
/// `CODEX_API_TOKEN`, else none. Errors never show the token.
fn api_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let token = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the API token file {}", path.display()))?;
            text.trim().to_string()
        }
        None => match std::env::var("CODEX_API_TOKEN") {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => return Ok(None),
        },
    };
    codex::node::security::check_token(&token).context(match file {
        Some(path) => format!("in {}", path.display()),
        None => "in CODEX_API_TOKEN".to_string(),
    })?;
    Ok(Some(token))
}

/// An HTTP client that sends `Authorization: Bearer TOKEN` when there is a token.
fn client(token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .context("the API token cannot be sent in a header")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(with_config_file(std::env::args_os().collect())?);
    let token = match &cli.command {
        // The node reads its token in `run`, once logging is set up; proofs need none.
        None
        | Some(Command::ProofInput { .. } | Command::Params { .. } | Command::Ceremony { .. }) => {
            None
        }
        Some(_) => api_token(cli.run.api_token_file.as_deref())?,
    };
    let http = client(token.as_deref())?;
    match cli.command {
        None => run(cli.run).await,
        Some(Command::Upload { file, mime, api }) => upload(&http, &api, &file, mime).await,
        Some(Command::Download { cid, output, api }) => download(&http, &api, &cid, &output).await,
        Some(Command::Erasure { cid, k, m, api }) => erasure(&http, &api, &cid, k, m).await,
        Some(Command::Verifiable { cid, k, m, api }) => verifiable(&http, &api, &cid, k, m).await,
        Some(Command::ProofInput {
            command: ProofInputCommand::Check { file },
        }) => proof_input_check(&file),
        Some(Command::ProofInput {
            command:
                ProofInputCommand::Prove {
                    file,
                    circuit_params,
                    dev_params,
                    cache_dir,
                    output,
                },
        }) => proof_input_prove(
            &file,
            srs(circuit_params, dev_params)?,
            cache_dir,
            output.as_deref(),
        ),
        Some(Command::Params { command }) => setup::params(command),
        Some(Command::Ceremony { command }) => setup::ceremony(command),
        Some(Command::List { api }) => print_json(&http, &format!("{api}/data")).await,
        Some(Command::Space { api }) => print_json(&http, &format!("{api}/space")).await,
    }
}

/// The command line with the flags of `--config-file FILE` put first, so that those
/// given on the command line override them.
fn with_config_file(args: Vec<std::ffi::OsString>) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let mut path = None;
    for (i, a) in args.iter().enumerate() {
        let a = a.to_string_lossy();
        if a == "--config-file" {
            path = args.get(i + 1).map(PathBuf::from);
        } else if let Some(p) = a.strip_prefix("--config-file=") {
            path = Some(PathBuf::from(p));
        }
    }
    let Some(path) = path else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let mut flags: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in table {
        anyhow::ensure!(
            key != "config-file",
            "{}: a config file cannot name another",
            path.display()
        );
        let flag = format!("--{key}");
        let scalar = |v: &toml::Value| -> anyhow::Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => anyhow::bail!(
                    "{}: {key} = {other}: expected a string, a number, a boolean or a list",
                    path.display()
                ),
            })
        };
        match &value {
            toml::Value::Boolean(true) => flags.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for v in items {
                    flags.push(flag.clone().into());
                    flags.push(scalar(v)?.into());
                }
            }
            v => {
                flags.push(flag.into());
                flags.push(scalar(v)?.into());
            }
        }
    }
    let mut out = Vec::with_capacity(args.len() + flags.len());
    out.extend(args.first().cloned());
    out.extend(flags);
    out.extend(args.into_iter().skip(1));
    Ok(out)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level).context("bad --log-level")?,
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(path) = &args.config_file {
        tracing::info!(config = %path.display(), "flags read from the config file");
    }
    let api_token = api_token(args.api_token_file.as_deref())?;
    #[cfg(unix)]
    if let Some(path) = &args.api_token_file {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:o}"),
                "others may read the API token file; chmod 600 it"
            );
        }
    }
    let marketplace = match (
        &args.eth_provider,
        args.marketplace_address,
        &args.eth_private_key,
    ) {
        (Some(url), Some(address), Some(key)) => Some(codex::node::market::MarketConfig::new(
            url.clone(),
            address,
            codex::node::market::EthKey::parse(&key.0)?,
            srs(args.circuit_params.clone(), args.dev_params)?,
        )),
        _ => None,
    };
    let node = Node::start(NodeConfig {
        data_dir: args.data_dir,
        api_bindaddr: args.api_bindaddr,
        api_port: args.api_port,
        api_token,
        storage_quota: args.storage_quota,
        block_ttl: Duration::from_secs(args.block_ttl),
        block_maintenance_interval: Duration::from_secs(args.block_maintenance_interval.max(1)),
        block_maintenance_batch: args.block_maintenance_batch,
        network: (!args.no_network).then(|| {
            let mut net = codex::net::NetConfig::default();
            if !args.listen_addrs.is_empty() {
                net.listen_addrs = args.listen_addrs.clone();
            }
            net.bootstrap = args.bootstrap_nodes.clone();
            net
        }),
        marketplace,
        validator: args
            .validator
            .then(|| -> anyhow::Result<_> {
                if let Some(g) = args.validator_groups {
                    anyhow::ensure!(
                        g > 0 && args.validator_group_index < g,
                        "--validator-group-index must be below --validator-groups"
                    );
                }
                Ok(codex::node::validator::ValidatorConfig {
                    groups: args.validator_groups,
                    group_index: args.validator_group_index,
                    max_slots: args.validator_max_slots,
                })
            })
            .transpose()?,
    })
    .await?;
    // The first line on stdout is the API URL, for scripts and tests.
    println!("{}", node.api_url());
    if let Some(net) = node.network()
        && let Ok(info) = net.info().await
    {
        for addr in &info.listen_addrs {
            eprintln!("peer address: {addr}/p2p/{}", info.peer_id);
        }
    }
    eprintln!(
        "Codex node running. Try:\n  codex-node upload FILE --api {0}\n  codex-node list --api {0}",
        node.api_url()
    );
    tokio::signal::ctrl_c().await?;
    eprintln!("shutting down");
    node.shutdown().await?;
    Ok(())
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// POSTs `body` for work of unknown length, showing a spinner; the answer's text, or an
/// error with the status and the node's message.
async fn post_long(
    http: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
    message: String,
) -> anyhow::Result<String> {
    let spinner = spinner(message);
    let res = http
        .post(url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {url}"));
    spinner.finish_and_clear();
    let res = res?;
    let status = res.status();
    let text = res.text().await?;
    if !status.is_success() {
        bail!("{status}: {text}");
    }
    Ok(text)
}

/// A spinner for work whose length is unknown (hidden when stderr is not a terminal).
pub(crate) fn spinner(message: String) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(message);
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

async fn upload(
    http: &reqwest::Client,
    api: &str,
    file: &Path,
    mime: Option<String>,
) -> anyhow::Result<()> {
    let f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let len = f.metadata().await?.len();
    let progress = bar(len, "uploading");
    let p = progress.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).inspect(move |chunk| {
        if let Ok(c) = chunk {
            p.inc(c.len() as u64);
        }
    });
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("upload");
    let mut req = http
        .post(format!("{api}/data"))
        .header(
            "Content-Disposition",
            format!("attachment; filename=\"{name}\""),
        )
        .header("Content-Length", len)
        .body(reqwest::Body::wrap_stream(stream));
    if let Some(m) = mime {
        req = req.header("Content-Type", m);
    }
    let started = Instant::now();
    let res = req
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {api}"))?;
    progress.finish_and_clear();
    let status = res.status();
    let text = res.text().await?;
    if !status.is_success() {
        bail!("upload refused ({status}): {text}");
    }
    eprintln!(
        "stored {} bytes in {:.2} s; fetch it with: codex-node download {text} -o FILE",
        len,
        started.elapsed().as_secs_f64()
    );
    println!("{text}");
    Ok(())
}

async fn download(
    http: &reqwest::Client,
    api: &str,
    cid: &str,
    output: &Path,
) -> anyhow::Result<()> {
    let mut res = http
        .get(format!("{api}/data/{cid}"))
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {api}"))?;
    if res.status() == reqwest::StatusCode::NOT_FOUND {
        eprintln!("{cid} is not stored locally: fetching it from the network");
        res = http
            .get(format!("{api}/data/{cid}/network/stream"))
            .send()
            .await?;
    }
    let status = res.status();
    if !status.is_success() {
        bail!("download refused ({status}): {}", res.text().await?);
    }
    let len = res.content_length().unwrap_or(0);
    let progress = bar(len, "downloading");
    // Write beside the target and rename at the end: no half-written file on failure.
    let partial = output.with_extension("partial");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut body = res.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download was cut off")?;
        file.write_all(&chunk).await?;
        written += chunk.len() as u64;
        progress.inc(chunk.len() as u64);
    }
    file.flush().await?;
    drop(file);
    progress.finish_and_clear();
    if len != 0 && written != len {
        let _ = tokio::fs::remove_file(&partial).await;
        bail!("the node sent {written} of {len} bytes");
    }
    tokio::fs::rename(&partial, output).await?;
    eprintln!("wrote {written} bytes to {}", output.display());
    Ok(())
}

async fn erasure(
    http: &reqwest::Client,
    api: &str,
    cid: &str,
    k: usize,
    m: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let text = post_long(
        http,
        &format!("{api}/data/{cid}/erasure"),
        serde_json::json!({ "k": k, "m": m }),
        format!("erasure-coding {cid} with K = {k}, M = {m}"),
    )
    .await
    .context("erasure coding refused")?;
    eprintln!(
        "protected in {:.2} s: any {m} of the {} slots may be lost; download it with: codex-node download {text} -o FILE",
        started.elapsed().as_secs_f64(),
        k + m
    );
    println!("{text}");
    Ok(())
}

async fn verifiable(
    http: &reqwest::Client,
    api: &str,
    cid: &str,
    k: usize,
    m: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let text = post_long(
        http,
        &format!("{api}/data/{cid}/verifiable"),
        serde_json::json!({ "k": k, "m": m }),
        format!("building the slot trees of {cid}"),
    )
    .await
    .context("refused")?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    eprintln!(
        "slot trees built in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    println!("manifest: {}", v["cid"].as_str().unwrap_or_default());
    println!(
        "verify root: {}",
        v["verifyRoot"].as_str().unwrap_or_default()
    );
    Ok(())
}

fn proof_input_check(file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let input = codex::proofs::ProofInput::from_json(&text).context("not a valid circuit input")?;
    let indices = input
        .check()
        .context("the proof input does not check out")?;
    println!(
        "ok: slot {} of {}, {} cells per slot, {} samples",
        input.slot_index,
        input.n_slots_per_data_set,
        input.n_cells_per_slot,
        indices.len()
    );
    println!("sample indices: {indices:?}");
    Ok(())
}

fn proof_input_prove(
    file: &Path,
    srs: codex::proofs::Srs,
    cache_dir: Option<PathBuf>,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    use codex::proofs::Prover;
    use std::time::Instant;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let input = codex::proofs::ProofInput::from_json(&text).context("not a valid circuit input")?;
    input
        .check()
        .context("the proof input does not check out")?;
    let cache = cache_dir.unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("codex-rs/proofs")
    });
    let spinner = spinner(format!(
        "setting up the circuit for {} samples",
        input.samples.len()
    ));
    let (prover, setup) = Prover::new(&srs, input.samples.len(), Some(&cache))?;
    spinner.finish_and_clear();
    eprintln!(
        "setup: k = {}, parameters {:.2?}, keys {:.2?}{}",
        prover.k(),
        setup.params,
        setup.keys,
        if setup.cached { " (cached)" } else { "" }
    );
    let t = Instant::now();
    let proof = prover.prove(&input)?;
    let prove_time = t.elapsed();
    let t = Instant::now();
    prover
        .verify(&proof.public_inputs, &proof.bytes)
        .context("the new proof does not verify")?;
    let verify_time = t.elapsed();
    println!("public inputs:");
    println!("  entropy      {}", proof.public_inputs[0]);
    println!("  dataSetRoot  {}", proof.public_inputs[1]);
    println!("  slotIndex    {}", proof.public_inputs[2]);
    println!("proof: {} bytes", proof.bytes.len());
    println!("verifying key digest: {}", prover.verifying_key_digest());
    println!("prove: {prove_time:.2?}");
    println!("verify: {verify_time:.2?}");
    if let Some(path) = output {
        std::fs::write(path, hex::encode(&proof.bytes))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

async fn print_json(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let res = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = res.status();
    let text = res.text().await?;
    if !status.is_success() {
        bail!("{status}: {text}");
    }
    let body: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{url} did not answer JSON"))?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Cli, Command, api_token, parse_size};
    use clap::Parser;

    #[test]
    fn the_token_file_is_read_before_or_after_a_client_command() -> anyhow::Result<()> {
        for args in [
            &["codex-node", "--api-token-file", "t", "list"][..],
            &["codex-node", "list", "--api-token-file", "t"],
            &["codex-node", "--api-token-file", "t"],
        ] {
            let cli = Cli::try_parse_from(args)?;
            assert_eq!(
                cli.run.api_token_file.as_deref(),
                Some(std::path::Path::new("t")),
                "{args:?}"
            );
            assert_eq!(
                matches!(cli.command, Some(Command::List { .. })),
                args.len() == 4
            );
        }
        Ok(())
    }

    #[test]
    fn token_files_are_trimmed_and_bad_tokens_refused_unseen() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-token\n")?;
        assert_eq!(api_token(Some(&path))?.as_deref(), Some("s3cret-token"));
        for bad in ["  \n", "two words"] {
            std::fs::write(&path, bad)?;
            let e = api_token(Some(&path)).err().map(|e| format!("{e:#}"));
            assert!(
                e.as_ref().is_some_and(|e| !e.contains("words")),
                "{bad:?}: {e:?}"
            );
        }
        assert!(api_token(Some(&dir.path().join("missing"))).is_err());
        Ok(())
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("3k"), Ok(3 << 10));
        assert!(parse_size("lots").is_err());
    }
}
