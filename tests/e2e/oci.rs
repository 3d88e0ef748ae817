//! A tiny, byte-reproducible OCI image layout built in Rust (no base image, no external tools):
//! one gzip layer holding `usr/share/nginx/html/index.html`, a config and a manifest tagged `1.0`
//! (an nginx-like single-layer image). Not runnable; it only has to round-trip a registry.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The file the layer carries and its content.
const INDEX_HTML: &[u8] = b"hello from acr-broker e2e\n";

/// A built image layout and the digests a pull must reproduce.
pub struct OciImage {
    /// The layout directory (`oci:DIR:1.0`).
    pub dir: PathBuf,
    /// `sha256:…` of the manifest (what `skopeo inspect` prints as Digest).
    pub manifest_digest: String,
    /// `sha256:…` of the gzip layer blob.
    pub layer_digest: String,
    /// `sha256:…` of the config blob.
    pub config_digest: String,
    /// The manifest bytes as pushed.
    pub manifest: Vec<u8>,
    /// Every layer's digest, in order.
    pub layer_digests: Vec<String>,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", data_encoding::HEXLOWER.encode(&Sha256::digest(bytes)))
}

/// Builds the layout under `dir` (created) and returns its digests.
pub fn build(dir: &Path) -> std::io::Result<OciImage> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let put = |bytes: &[u8]| -> std::io::Result<String> {
        let digest = sha256_digest(bytes);
        std::fs::write(blobs.join(&digest["sha256:".len()..]), bytes)?;
        Ok(digest)
    };

    let layer_tar = layer_tar();
    let diff_id = sha256_digest(&layer_tar);
    let layer = gzip_stored(&layer_tar);
    let layer_digest = put(&layer)?;

    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/true"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    );
    let config_digest = put(config.as_bytes())?;

    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    )
    .into_bytes();
    let manifest_digest = put(&manifest)?;

    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"1.0"}}}}]}}"#,
        manifest.len()
    );
    std::fs::write(dir.join("index.json"), index)?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let layer_digests = vec![layer_digest.clone()];
    Ok(OciImage { dir: dir.to_path_buf(), manifest_digest, layer_digest, config_digest, manifest, layer_digests })
}

/// An image layout under `dir` tagged `tag` with one uncompressed tar layer per entry of
/// `sizes` (each holding one file of that many pseudo-random bytes), streamed to disk so a
/// 512 MiB layer costs no memory; `layer_digest` is the largest layer.
pub fn build_layers(dir: &Path, tag: &str, sizes: &[u64]) -> std::io::Result<OciImage> {
    use std::io::Write;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let mut layers = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let tmp = blobs.join(format!(".layer{i}.tmp"));
        let mut out =
            HashingWriter { file: std::io::BufWriter::new(std::fs::File::create(&tmp)?), hash: Sha256::new(), len: 0 };
        out.write_all(&tar_header(&format!("./layer{i}.bin"), 0o644, size as usize, b'0'))?;
        let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ (i as u64 + 1);
        let mut chunk = vec![0u8; 1 << 16];
        let mut left = size;
        while left > 0 {
            for word in chunk.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
            }
            let n = left.min(chunk.len() as u64) as usize;
            out.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        let pad = (512 - (size % 512) as usize) % 512 + 1024;
        out.write_all(&vec![0u8; pad])?;
        out.file.flush()?;
        let digest = format!("sha256:{}", data_encoding::HEXLOWER.encode(&out.hash.finalize()));
        std::fs::rename(&tmp, blobs.join(&digest["sha256:".len()..]))?;
        layers.push((digest, out.len));
    }
    let put = |bytes: &[u8]| -> std::io::Result<String> {
        let digest = sha256_digest(bytes);
        std::fs::write(blobs.join(&digest["sha256:".len()..]), bytes)?;
        Ok(digest)
    };
    let diff_ids: Vec<String> = layers.iter().map(|(d, _)| format!("\"{d}\"")).collect();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/true"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let config_digest = put(config.as_bytes())?;
    let layer_json: Vec<String> = layers
        .iter()
        .map(|(d, n)| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{n}}}"#))
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        layer_json.join(",")
    )
    .into_bytes();
    let manifest_digest = put(&manifest)?;
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#,
        manifest.len()
    );
    std::fs::write(dir.join("index.json"), index)?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let largest = layers.iter().max_by_key(|(_, n)| *n).map(|(d, _)| d.clone()).unwrap_or_default();
    Ok(OciImage {
        dir: dir.to_path_buf(),
        manifest_digest,
        layer_digest: largest,
        config_digest,
        manifest,
        layer_digests: layers.into_iter().map(|(d, _)| d).collect(),
    })
}

/// Writes through to a file while hashing and counting.
struct HashingWriter {
    file: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
    len: u64,
}

impl std::io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The layer as an uncompressed ustar archive: directories, then the file; mtime 0, root owner.
fn layer_tar() -> Vec<u8> {
    let mut out = Vec::new();
    for d in ["./", "./usr/", "./usr/share/", "./usr/share/nginx/", "./usr/share/nginx/html/"] {
        out.extend_from_slice(&tar_header(d, 0o755, 0, b'5'));
    }
    out.extend_from_slice(&tar_header("./usr/share/nginx/html/index.html", 0o644, INDEX_HTML.len(), b'0'));
    out.extend_from_slice(INDEX_HTML);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.resize(out.len() + 1024, 0); // end-of-archive: two zero blocks
    out
}

/// One 512-byte ustar header.
fn tar_header(name: &str, mode: u32, size: usize, kind: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    assert!(name.len() < 100, "tar name too long: {name}");
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut h, 108, b"0000000\0"); // uid
    put(&mut h, 116, b"0000000\0"); // gid
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, b"00000000000\0"); // mtime
    put(&mut h, 148, b"        "); // checksum placeholder (spaces while summing)
    h[156] = kind;
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

/// gzip (RFC 1952) with stored deflate blocks (RFC 1951 BTYPE=00): valid, deterministic, no deps.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    // magic, CM=deflate, no flags, MTIME=0, XFL=0, OS=unix
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    let mut chunks = data.chunks(0xffff).peekable();
    if data.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none())); // BFINAL on the last block, BTYPE=00
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, as gzip uses).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// The manifest digest [`build`] produces; it changes only when the builder or its content does.
pub const EXPECTED_MANIFEST_DIGEST: &str = "sha256:d5d66199bf0e1125a681bd13cf58a2769a8801d0f32420b4e068e6d2df5e8f88";

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}

#[test]
fn multi_layer_layouts_are_reproducible_and_unpack() {
    let (a, b) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let x = build_layers(a.path(), "multi", &[1000, 70_000, 3]).expect("build a");
    let y = build_layers(b.path(), "multi", &[1000, 70_000, 3]).expect("build b");
    assert_eq!(x.manifest_digest, y.manifest_digest);
    assert_eq!(x.layer_digests.len(), 3);
    assert_eq!(x.layer_digest, x.layer_digests[1], "the largest layer");
    let layer = a.path().join("blobs/sha256").join(&x.layer_digests[1]["sha256:".len()..]);
    assert_eq!(sha256_digest(&std::fs::read(&layer).expect("layer")), x.layer_digests[1]);
    if Path::new("/bin/tar").exists() {
        let out = a.path().join("unpacked");
        std::fs::create_dir_all(&out).expect("mkdir");
        let status =
            std::process::Command::new("/bin/tar").arg("-xf").arg(&layer).arg("-C").arg(&out).status().expect("tar");
        assert!(status.success());
        assert_eq!(std::fs::metadata(out.join("layer1.bin")).expect("file").len(), 70_000);
    }
}

#[test]
fn layout_is_byte_reproducible_and_the_layer_unpacks_with_gnu_tar() {
    let (a, b) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let (x, y) = (build(a.path()).expect("build a"), build(b.path()).expect("build b"));
    assert_eq!(x.manifest_digest, y.manifest_digest);
    assert_eq!(x.manifest_digest, EXPECTED_MANIFEST_DIGEST);
    assert_eq!(sha256_digest(&x.manifest), x.manifest_digest);
    if !Path::new("/bin/tar").exists() {
        eprintln!("skipping the tar check: /bin/tar missing");
        return;
    }
    let layer = a.path().join("blobs/sha256").join(&x.layer_digest["sha256:".len()..]);
    let out = a.path().join("unpacked");
    std::fs::create_dir_all(&out).expect("mkdir");
    let status =
        std::process::Command::new("/bin/tar").arg("-xzf").arg(&layer).arg("-C").arg(&out).status().expect("run tar");
    assert!(status.success(), "GNU tar could not unpack the layer");
    let html = std::fs::read(out.join("usr/share/nginx/html/index.html")).expect("unpacked file");
    assert_eq!(html, INDEX_HTML);
}
