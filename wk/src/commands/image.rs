//! `wk image`: the node's image store (what `runtimeClassName: oci` pods run from), used
//! directly on the node like `ctr images`: import archives, pull, list, remove.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use wk_runtime_oci::store::{Image, ImageStore};

#[derive(clap::Args)]
pub struct Args {
    /// The agent's data directory (the store is its `oci/images`)
    #[arg(long, global = true, default_value = "/var/lib/wk-agent")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Import an oci-archive or `docker save` tarball
    Import {
        file: PathBuf,
        /// The name to give the image (when the archive has none, or to rename a single image)
        #[arg(long)]
        name: Option<String>,
    },
    /// Pull an image from its registry, with a progress bar
    Pull {
        reference: String,
        /// Reach the registry over plain HTTP
        #[arg(long)]
        insecure: bool,
        /// Registry user (the password is read from WK_REGISTRY_PASSWORD)
        #[arg(long)]
        username: Option<String>,
    },
    /// List images
    Ls,
    /// Remove images (refused while a container uses one)
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1}GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1}KiB", b as f64 / 1024.0),
        b => format!("{b}B"),
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn print(images: &[Image]) {
    println!(
        "{:<50} {:<14} {:<10} {:>10}",
        "REFERENCE", "DIGEST", "KIND", "SIZE"
    );
    for i in images {
        let kind = match i.kind {
            wk_runtime_oci::store::ImageKind::Container => "container",
            wk_runtime_oci::store::ImageKind::Wasm => "wasm",
        };
        println!(
            "{:<50} {:<14} {:<10} {:>10}",
            i.reference,
            short(&i.digest),
            kind,
            human(i.size)
        );
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let root = args.data_dir.join("oci/images");
    let store = ImageStore::open(&root)
        .with_context(|| format!("opening the image store at {}", root.display()))?;
    match args.command {
        Sub::Import { file, name } => {
            let images = tokio::task::spawn_blocking(move || store.import(&file, name.as_deref()))
                .await?
                .context("import failed")?;
            for i in &images {
                println!("imported {} ({})", i.reference, i.digest);
            }
        }
        Sub::Pull {
            reference,
            insecure,
            username,
        } => {
            let registry = reference
                .parse::<wk_runtime_oci::Reference>()
                .map(|r| r.resolve_registry().to_string())
                .with_context(|| format!("{reference:?} is not an image reference"))?;
            let client =
                wk_runtime_oci::registry_client(if insecure { vec![registry] } else { vec![] });
            let auth = match username {
                Some(u) => wk_runtime_oci::RegistryAuth::Basic(
                    u,
                    std::env::var("WK_REGISTRY_PASSWORD").unwrap_or_default(),
                ),
                None => wk_runtime_oci::RegistryAuth::Anonymous,
            };
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            let b = bar.clone();
            let image = store
                .pull(&client, &reference, &auth, &move |p| {
                    b.set_message(format!(
                        "layer {}/{} {}",
                        p.layer + 1,
                        p.layers,
                        short(&p.digest)
                    ));
                    if let Some(t) = p.total {
                        b.set_length(t);
                    }
                    b.set_position(p.done);
                })
                .await;
            bar.finish_and_clear();
            let image = image.context("pull failed")?;
            println!(
                "pulled {} ({}, {})",
                image.reference,
                image.digest,
                human(image.size)
            );
        }
        Sub::Ls => print(&store.list()?),
        Sub::Rm { references } => {
            let mut failed = false;
            for r in references {
                match store.remove(&r) {
                    Ok(i) => println!("removed {}", i.reference),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
