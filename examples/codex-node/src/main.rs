//! `codex-node`: run a Codex node, or talk to a running one.
//!
//! ```text
//! codex-node --data-dir ./data --api-port 8080        # run a node
//! codex-node upload FILE                              # store a file, print its CID
//! codex-node download CID -o FILE                     # fetch it back (local, else the network)
//! codex-node upload FILE --encrypt --key-file K       # encrypt it; its key goes to K (mode 0600)
//! codex-node download CID -o FILE --key-file K        # fetch it back decrypted
//! codex-node upload FILE --encrypt --passphrase-file P  # a key derived from a passphrase
//! codex-node download CID -o FILE --passphrase-file P
//! codex-node list | space                             # what the node holds
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::builder::TypedValueParser as _;
use clap::{ArgGroup, Parser, Subcommand};
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
    /// The origin browsers may call the REST API from: `*` for any, or one origin such
    /// as `https://app.example`. Without it (or empty) no CORS headers are sent.
    #[arg(long = "api-cors-origin")]
    api_cors_origin: Option<String>,
    /// Serve Prometheus metrics at http://METRICS_ADDRESS:METRICS_PORT/metrics.
    #[arg(long)]
    metrics: bool,
    /// The metrics' address (with --metrics).
    #[arg(long = "metrics-address", default_value = "127.0.0.1")]
    metrics_address: IpAddr,
    /// The metrics' port (with --metrics; 0 picks a free one).
    #[arg(long = "metrics-port", default_value_t = 8008)]
    metrics_port: u16,
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
    /// A node to join the network through, as a multiaddr ending in /p2p/PEER_ID or
    /// as its signed peer record, `spr:...` (what its `GET /spr` answers; the record's
    /// signature is checked and each of its addresses dialed). Repeatable.
    #[arg(long = "bootstrap-node")]
    bootstrap_nodes: Vec<codex::net::BootstrapNode>,
    /// How the node learns the address others reach it at (Codex's flag): `any`
    /// (AutoNAT and UPnP), `none`, `upnp`, or `extip:IP` (each listen address announced
    /// with that IP). A node AutoNAT finds unreachable reserves a slot on a relay and
    /// is reached through it until hole punching (DCUtR) opens a direct connection.
    #[arg(long = "nat", default_value = "any")]
    nat: codex::net::Nat,
    /// An address to announce as the node's own (a port forwarded by hand, say).
    /// Repeatable.
    #[arg(long = "announce-addr")]
    announce_addrs: Vec<codex::net::Multiaddr>,
    /// A relay to reserve a slot on when the node is not reachable, as a multiaddr
    /// ending in /p2p/PEER_ID (tried before relays found among peers). Repeatable.
    #[arg(long = "relay")]
    relays: Vec<codex::net::Multiaddr>,
    /// Serve as a relay for peers behind NATs (reservations, circuits, their length and
    /// bytes bounded).
    #[arg(long = "relay-server")]
    relay_server: bool,
    /// JSON-RPC URL of the chain the marketplace runs on: http(s):// or ws(s)://
    /// (e.g. ws://127.0.0.1:8545, Codex's default scheme).
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
    /// How often the chain is polled, in seconds (one poll of the next block drives
    /// every held slot; events are read at the same pace).
    #[arg(long = "eth-poll-interval", default_value_t = 1.0, value_parser = positive_secs)]
    eth_poll_interval: f64,
    /// Blocks on top of a block before its events are acted on (0: up to the latest;
    /// reorganisations are followed by block hash either way) and a transaction's
    /// receipt counts (at least 1).
    #[arg(long = "eth-confirmations", default_value_t = 0)]
    eth_confirmations: u64,
    /// Seconds a transaction may stay unmined before it is sent again with fees raised
    /// by 25%.
    #[arg(long = "eth-receipt-timeout", default_value_t = 30.0, value_parser = positive_secs)]
    eth_receipt_timeout: f64,
    /// The highest fee per gas (EIP-1559 `maxFeePerGas`) ever offered, in gwei;
    /// default: no cap.
    #[arg(long = "eth-max-fee-gwei")]
    eth_max_fee_gwei: Option<f64>,
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
    /// The network key's file, relative to --data-dir unless absolute: libp2p's
    /// protobuf encoding of the private key, as Codex keeps it. Created (mode 0600) with
    /// a key of --net-key-type when it does not exist.
    #[arg(long = "net-privkey", default_value = "key")]
    net_privkey: PathBuf,
    /// The type of a network key the node creates: ed25519, or secp256k1, the only type
    /// Codex nodes take. A key file that exists keeps its key, whatever its type.
    #[arg(
        long = "net-key-type",
        default_value = "ed25519",
        value_parser = clap::builder::PossibleValuesParser::new(["ed25519", "secp256k1"])
            .try_map(|s| s.parse::<codex::net::KeyType>())
    )]
    net_key_type: codex::net::KeyType,
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
    /// The first block whose filled slots the validator follows (ours); default: the
    /// last 10 000 blocks before it starts, never genesis.
    #[arg(long = "validator-from-block", requires = "validator")]
    validator_from_block: Option<u64>,
    /// Keep the key of every dataset encrypted on upload in DATA_DIR/keys (mode 0600),
    /// so that downloads can ask the node to decrypt (`download --decrypt`,
    /// `GET /data/{cid}?decrypt=true`). Off by default: the node returns each key once
    /// and forgets it.
    #[arg(long)]
    keep_keys: bool,
    /// What to log: Codex's levels, `INFO;TRACE: codex_net,codex_market` (TRACE,
    /// DEBUG, INFO, NOTICE, WARN, ERROR, FATAL, NONE, per topic = module path), or
    /// tracing's filter, `info,codex_net=debug`. `POST /debug/chronicles/loglevel`
    /// changes it while the node runs.
    #[arg(long, default_value = "info", env = "CODEX_LOG")]
    log_level: String,
    /// How log lines are written: `text` or `json` (one object per line).
    #[arg(long = "log-format", default_value = "text")]
    log_format: codex::logging::LogFormat,
    /// Append the log to this file instead of writing it to stderr.
    #[arg(long = "log-file")]
    log_file: Option<PathBuf>,
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
    #[command(group(ArgGroup::new("upload_secret").args(["key_file", "passphrase_file"])))]
    Upload {
        /// The file to store.
        file: PathBuf,
        /// MIME type to record (default: none; encrypted, it is kept in the ciphertext).
        #[arg(long)]
        mime: Option<String>,
        /// Encrypt the file (XChaCha20-Poly1305 per block) before it is stored: the
        /// node and the hosts keep only ciphertext. Needs --key-file or
        /// --passphrase-file.
        #[arg(long, requires = "upload_secret")]
        encrypt: bool,
        /// With --encrypt: write the dataset's new random key here (64 hex digits, mode
        /// 0600). An existing file is refused before anything is uploaded.
        #[arg(long = "key-file", requires = "encrypt")]
        key_file: Option<PathBuf>,
        /// With --encrypt: derive the key from the passphrase in this file (Argon2id;
        /// the file's text, without its final newline) instead of a random key.
        #[arg(long = "passphrase-file", requires = "encrypt")]
        passphrase_file: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_API)]
        api: String,
    },
    /// Download a dataset from a running node into a file (from the network when the
    /// node does not hold it). The file appears only once complete.
    #[command(group(ArgGroup::new("download_secret").args(["key_file", "passphrase_file", "decrypt"])))]
    Download {
        /// The manifest CID.
        cid: String,
        /// Where to write it.
        #[arg(short, long)]
        output: PathBuf,
        /// Decrypt with the key in this file (written by `upload --encrypt --key-file`).
        /// Without a key the node serves the ciphertext.
        #[arg(long = "key-file")]
        key_file: Option<PathBuf>,
        /// Decrypt with the passphrase in this file.
        #[arg(long = "passphrase-file")]
        passphrase_file: Option<PathBuf>,
        /// Decrypt with the key the node kept (it runs with --keep-keys).
        #[arg(long)]
        decrypt: bool,
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

/// A positive number of seconds, at most a day (clap's parser for the `--eth-*`
/// intervals).
fn positive_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0 and 86400"
        )),
    }
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
        Some(Command::Upload {
            file,
            mime,
            encrypt,
            key_file,
            passphrase_file,
            api,
        }) => {
            let encrypt = encrypt.then_some(Encrypt {
                key_file,
                passphrase_file,
            });
            interruptible(upload(&http, &api, &file, mime, encrypt)).await
        }
        Some(Command::Download {
            cid,
            output,
            key_file,
            passphrase_file,
            decrypt,
            api,
        }) => {
            let secret = match (key_file, passphrase_file) {
                (Some(path), _) => Some(DownloadKey::KeyFile(path)),
                (None, Some(path)) => Some(DownloadKey::PassphraseFile(path)),
                (None, None) => decrypt.then_some(DownloadKey::Kept),
            };
            interruptible(download(&http, &api, &cid, &output, secret)).await
        }
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
    let logging = codex::logging::init(&codex::logging::LogSettings {
        level: args.log_level.clone(),
        format: args.log_format,
        file: args.log_file.clone(),
    })
    .context("--log-level, --log-format, --log-file")?;
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
        (Some(url), Some(address), Some(key)) => {
            let mut config = codex::node::market::MarketConfig::new(
                url.clone(),
                address,
                codex::node::market::EthKey::parse(&key.0)?,
                srs(args.circuit_params.clone(), args.dev_params)?,
            );
            config.poll_interval = Duration::from_secs_f64(args.eth_poll_interval);
            config.confirmations = args.eth_confirmations;
            config.tx.confirmations = args.eth_confirmations.max(1);
            config.tx.receipt_timeout = Duration::from_secs_f64(args.eth_receipt_timeout);
            config.tx.max_fee_per_gas = args
                .eth_max_fee_gwei
                .map(|g| {
                    anyhow::ensure!(
                        g.is_finite() && g > 0.0,
                        "--eth-max-fee-gwei must be a positive number"
                    );
                    Ok((g * 1e9) as u128)
                })
                .transpose()?;
            Some(config)
        }
        _ => None,
    };
    let node = Node::start(NodeConfig {
        data_dir: args.data_dir,
        api_bindaddr: args.api_bindaddr,
        api_port: args.api_port,
        api_token,
        api_cors_origin: args.api_cors_origin.clone(),
        log_control: Some(std::sync::Arc::new(logging)),
        metrics_addr: args
            .metrics
            .then(|| std::net::SocketAddr::new(args.metrics_address, args.metrics_port)),
        storage_quota: args.storage_quota,
        block_ttl: Duration::from_secs(args.block_ttl),
        block_maintenance_interval: Duration::from_secs(args.block_maintenance_interval.max(1)),
        block_maintenance_batch: args.block_maintenance_batch,
        network: (!args.no_network).then(|| {
            let mut net = codex::net::NetConfig::default();
            if !args.listen_addrs.is_empty() {
                net.listen_addrs = args.listen_addrs.clone();
            }
            net.bootstrap = args
                .bootstrap_nodes
                .iter()
                .flat_map(codex::net::BootstrapNode::addresses)
                .collect();
            net.nat.nat = args.nat;
            net.nat.announce_addrs = args.announce_addrs.clone();
            net.nat.relays = args.relays.clone();
            net.nat.relay_server = args
                .relay_server
                .then(codex::net::RelayServerConfig::default);
            net
        }),
        net_privkey: args.net_privkey,
        net_key_type: args.net_key_type,
        marketplace,
        keep_keys: args.keep_keys,
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
                    from_block: args.validator_from_block,
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
    if let Some(addr) = node.metrics_addr() {
        eprintln!("metrics: http://{addr}/metrics");
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

/// The request headers of the encryption API (the node's `KEY_HEADER` and
/// `PASSPHRASE_HEADER`).
use codex::node::api::{KEY_HEADER, PASSPHRASE_HEADER};

/// `upload --encrypt`: where the key goes, or the passphrase it derives from.
#[derive(Debug)]
struct Encrypt {
    key_file: Option<PathBuf>,
    passphrase_file: Option<PathBuf>,
}

/// What a download decrypts with.
#[derive(Debug)]
enum DownloadKey {
    /// `--key-file`: 64 hex digits.
    KeyFile(PathBuf),
    /// `--passphrase-file`.
    PassphraseFile(PathBuf),
    /// `--decrypt`: the key the node kept.
    Kept,
}

/// Runs a client command until it ends or Ctrl-C: on Ctrl-C the command is dropped, so
/// its guards remove what it left unfinished (a partial download, a reserved key file).
async fn interruptible(
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted: nothing was left behind"),
    }
}

/// Warns when others may read a file holding a secret.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: others may read {} (mode {mode:o}); chmod 600 it",
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The key in a key file, as the header value that carries it. Errors never show the
/// file's text.
fn key_header(path: &Path) -> anyhow::Result<reqwest::header::HeaderValue> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    let key = codex::crypto::Key::from_hex(&text)
        .with_context(|| format!("in the key file {}", path.display()))?;
    warn_if_readable_by_others(path);
    let mut value = reqwest::header::HeaderValue::from_str(&key.to_hex())?;
    value.set_sensitive(true);
    Ok(value)
}

/// The passphrase in a file (without its final newline), as the header value that
/// carries it. Errors never show it.
fn passphrase_header(path: &Path) -> anyhow::Result<reqwest::header::HeaderValue> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the passphrase file {}", path.display()))?;
    let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    anyhow::ensure!(
        !text.is_empty(),
        "the passphrase file {} is empty",
        path.display()
    );
    anyhow::ensure!(
        std::str::from_utf8(text).is_ok(),
        "the passphrase in {} is not UTF-8",
        path.display()
    );
    warn_if_readable_by_others(path);
    let mut value = reqwest::header::HeaderValue::from_bytes(text).map_err(|_| {
        anyhow::anyhow!(
            "the passphrase in {} holds control characters (a line break?): it must be one line",
            path.display()
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// A key file created (empty, mode 0600) before the upload, so that an existing file is
/// refused before anything is sent; removed again unless the key was written to it.
struct KeyFileOut {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl KeyFileOut {
    fn reserve(path: &Path) -> anyhow::Result<KeyFileOut> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "the key file {} exists: refusing to overwrite a key (nothing was uploaded)",
                    path.display()
                )
            } else {
                anyhow::anyhow!("cannot create the key file {}: {e}", path.display())
            }
        })?;
        Ok(KeyFileOut {
            path: path.to_path_buf(),
            file: Some(file),
        })
    }

    /// Writes the key and its newline, and syncs it to disk.
    fn write(mut self, key: &str) -> std::io::Result<()> {
        use std::io::Write;
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        let written = file
            .write_all(format!("{key}\n").as_bytes())
            .and_then(|()| file.sync_all());
        if written.is_err() {
            self.file = Some(file);
        }
        written
    }
}

impl Drop for KeyFileOut {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn upload(
    http: &reqwest::Client,
    api: &str,
    file: &Path,
    mime: Option<String>,
    encrypt: Option<Encrypt>,
) -> anyhow::Result<()> {
    // Everything that can be refused locally is, before a byte is sent.
    let mut key_out = None;
    let mut passphrase = None;
    if let Some(e) = &encrypt {
        anyhow::ensure!(
            e.key_file.is_some() != e.passphrase_file.is_some(),
            "--encrypt needs either --key-file or --passphrase-file"
        );
        if let Some(path) = &e.passphrase_file {
            passphrase = Some(passphrase_header(path)?);
        }
        if let Some(path) = &e.key_file {
            key_out = Some(KeyFileOut::reserve(path)?);
        }
    }
    let f = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let len = f.metadata().await?.len();
    let progress = bar(
        len,
        if encrypt.is_some() {
            "uploading (encrypted)"
        } else {
            "uploading"
        },
    );
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
    let url = if encrypt.is_some() {
        format!("{api}/data?encrypt=true")
    } else {
        format!("{api}/data")
    };
    let mut req = http
        .post(url)
        .header(
            "Content-Disposition",
            format!("attachment; filename=\"{name}\""),
        )
        .header("Content-Length", len)
        .body(reqwest::Body::wrap_stream(stream));
    if let Some(m) = mime {
        req = req.header("Content-Type", m);
    }
    if let Some(p) = passphrase {
        req = req.header(PASSPHRASE_HEADER, p);
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
    let secs = started.elapsed().as_secs_f64();
    let Some(encrypt) = encrypt else {
        eprintln!(
            "stored {len} bytes in {secs:.2} s; fetch it with: codex-node download {text} -o FILE"
        );
        println!("{text}");
        return Ok(());
    };
    let answer: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!("the node did not answer the encrypted upload with JSON: {text}")
    })?;
    let (Some(cid), Some(key)) = (answer["cid"].as_str(), answer["key"].as_str()) else {
        bail!("the node's answer to the encrypted upload lacks the CID or the key");
    };
    codex::crypto::Key::from_hex(key).context("the node returned an invalid key")?;
    let how = match (key_out, &encrypt.passphrase_file) {
        (Some(out), _) => {
            let path = out.path.clone();
            if let Err(e) = out.write(key) {
                // The node does not keep the key (unless it runs with --keep-keys): losing
                // it would lose the file, so it goes to the terminal as the last resort.
                eprintln!(
                    "could not write the key to {}: {e}\nthe dataset's key, shown once; keep it secret:\n{key}",
                    path.display()
                );
                println!("{cid}");
                bail!("the key was not written to {}", path.display());
            }
            format!("--key-file {}", path.display())
        }
        (None, Some(p)) => format!("--passphrase-file {}", p.display()),
        (None, None) => String::new(),
    };
    eprintln!(
        "stored {len} bytes encrypted in {secs:.2} s; the node keeps only ciphertext. Fetch it with: codex-node download {cid} -o FILE {how}"
    );
    println!("{cid}");
    Ok(())
}

/// Downloads `cid` into `output` (decrypted with `key` when given): from the node's store,
/// or from the network when the node does not hold it. The bytes go to a temporary file
/// beside `output`, renamed to it once complete; on any failure (a refusal, a stream cut
/// off, Ctrl-C) the temporary file is removed and `output` is untouched.
async fn download(
    http: &reqwest::Client,
    api: &str,
    cid: &str,
    output: &Path,
    key: Option<DownloadKey>,
) -> anyhow::Result<()> {
    let secret = match &key {
        Some(DownloadKey::KeyFile(path)) => Some((KEY_HEADER, key_header(path)?)),
        Some(DownloadKey::PassphraseFile(path)) => {
            Some((PASSPHRASE_HEADER, passphrase_header(path)?))
        }
        Some(DownloadKey::Kept) | None => None,
    };
    let query = if matches!(key, Some(DownloadKey::Kept)) {
        "?decrypt=true"
    } else {
        ""
    };
    let name = output
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} does not name a file", output.display()))?;
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let get = |url: String| {
        let mut req = http.get(url);
        if let Some((header, value)) = &secret {
            req = req.header(*header, value.clone());
        }
        req
    };
    let mut res = get(format!("{api}/data/{cid}{query}"))
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {api}"))?;
    if res.status() == reqwest::StatusCode::NOT_FOUND {
        eprintln!("{cid} is not stored locally: fetching it from the network");
        res = get(format!("{api}/data/{cid}/network/stream{query}"))
            .send()
            .await
            .with_context(|| format!("cannot reach the node at {api}"))?;
    }
    let status = res.status();
    if !status.is_success() {
        bail!("download refused ({status}): {}", res.text().await?);
    }
    let len = res.content_length();
    let filename = res
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once("filename=\""))
        .and_then(|(_, rest)| rest.strip_suffix('"'))
        .map(str::to_string);
    // A decrypted file is for its owner's eyes: mode 0600. Otherwise the usual 0666 less
    // the umask, as a file the shell creates.
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::Permissions::from_mode(if key.is_some() { 0o600 } else { 0o666 })
    };
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".partial");
    #[cfg(unix)]
    builder.permissions(mode);
    // Removed when dropped: on every early return below, and on Ctrl-C.
    let partial = builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut file = tokio::fs::File::from_std(partial.as_file().try_clone()?);
    let progress = bar(len.unwrap_or(0), "downloading");
    let mut body = res.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                progress.finish_and_clear();
                let of = len.map_or(String::new(), |n| format!(" of {n}"));
                let why = if key.is_some() {
                    "; a block that fails authentication (altered, or from another dataset) ends the stream, and the node's log names it"
                } else {
                    ""
                };
                bail!(
                    "the node cut the download off after {written}{of} bytes ({e}){why}; nothing was written to {}",
                    output.display()
                );
            }
        };
        file.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write beside {}", output.display()))?;
        written += chunk.len() as u64;
        progress.inc(chunk.len() as u64);
    }
    file.flush().await?;
    drop(file);
    progress.finish_and_clear();
    if let Some(n) = len
        && written != n
    {
        bail!(
            "the node sent {written} of {n} bytes; nothing was written to {}",
            output.display()
        );
    }
    partial
        .persist(output)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot rename the download to {}", output.display()))?;
    match (&key, filename) {
        (Some(_), Some(f)) => eprintln!(
            "wrote {written} bytes to {} (decrypted; uploaded as {f})",
            output.display()
        ),
        (Some(_), None) => eprintln!("wrote {written} bytes to {} (decrypted)", output.display()),
        (None, _) => eprintln!("wrote {written} bytes to {}", output.display()),
    }
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
    fn encryption_flags() -> anyhow::Result<()> {
        let cli = Cli::try_parse_from(["codex-node", "--keep-keys"])?;
        assert!(cli.run.keep_keys);
        let cli =
            Cli::try_parse_from(["codex-node", "upload", "f", "--encrypt", "--key-file", "k"])?;
        assert!(matches!(
            cli.command,
            Some(Command::Upload { encrypt: true, .. })
        ));
        for refused in [
            &["codex-node", "upload", "f", "--encrypt"][..],
            &["codex-node", "upload", "f", "--key-file", "k"],
            &[
                "codex-node",
                "upload",
                "f",
                "--encrypt",
                "--key-file",
                "k",
                "--passphrase-file",
                "p",
            ],
            &[
                "codex-node",
                "download",
                "c",
                "-o",
                "o",
                "--key-file",
                "k",
                "--decrypt",
            ],
            &[
                "codex-node",
                "download",
                "c",
                "-o",
                "o",
                "--key-file",
                "k",
                "--passphrase-file",
                "p",
            ],
        ] {
            assert!(Cli::try_parse_from(refused).is_err(), "{refused:?}");
        }
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
