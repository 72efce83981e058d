//! Serving the storage protocol ([`crate::wire`]) over one byte stream,
//! through a [`GuardedStorage`]: the loop behind `cairn serve --stdio`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;

use cairn_format::wire::Writer;
use cairn_storage::{Error, Storage};

use crate::guarded::GuardedStorage;
use cairn_remote::wire::{HELLO, MAX_FRAME, Op, Request, Status, read_frame_into, write_frame};

/// Largest staged upload: a pack is 32 MiB plus one record.
pub const MAX_UPLOAD: u64 = 1 << 30;

struct Upload {
    kind: cairn_storage::Kind,
    name: String,
    file: File,
    path: PathBuf,
    len: u64,
}

impl Drop for Upload {
    fn drop(&mut self) {
        // An upload that did not end in a publish leaves nothing behind.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn status_of(e: &Error) -> Status {
    match e {
        Error::NotFound { .. } => Status::NotFound,
        Error::AlreadyExists { .. } => Status::AlreadyExists,
        Error::Refused(_) | Error::InvalidName(_) => Status::Refused,
        Error::Short { .. } => Status::Short,
        _ => Status::Failed,
    }
}

fn reply(out: &mut dyn Write, status: Status, body: &[u8]) -> std::io::Result<()> {
    let mut f = Vec::with_capacity(body.len() + 1);
    f.push(status as u8);
    f.extend_from_slice(body);
    write_frame(out, &f)
}

/// Serves one client until it hangs up. Returns an error only when the
/// stream itself fails or the peer breaks the protocol.
pub fn serve(
    input: &mut dyn Read,
    out: &mut dyn Write,
    storage: &GuardedStorage,
) -> std::io::Result<()> {
    let mut hello = [0u8; 8];
    input.read_exact(&mut hello)?;
    if &hello != HELLO {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the client does not speak the Cairn storage protocol (version 1)",
        ));
    }
    out.write_all(HELLO)?;
    write_frame(out, storage.role_name().as_bytes())?;
    let mut upload: Option<Upload> = None;
    let mut frame = Vec::new();
    while read_frame_into(input, &mut frame)? {
        let (req, at) = match Request::decode_head(&frame) {
            Ok(r) => r,
            Err(e) => {
                reply(out, Status::Failed, format!("bad request: {e}").as_bytes())?;
                continue;
            }
        };
        let body = &frame[at..];
        let result: Result<Vec<u8>, Error> = match req.op {
            Op::Get => storage.get(req.kind, &req.name).and_then(|d| {
                if d.len() + 1 > MAX_FRAME {
                    Err(Error::io(
                        "get",
                        &req.name,
                        std::io::Error::other("object too large for one frame; read it in ranges"),
                    ))
                } else {
                    Ok(d)
                }
            }),
            Op::GetRange => {
                // `len` is the peer's: compared, never added to.
                if req.len >= MAX_FRAME as u64 {
                    Err(Error::io(
                        "get",
                        &req.name,
                        std::io::Error::other("range too large for one frame"),
                    ))
                } else {
                    storage.get_range(req.kind, &req.name, req.offset, req.len)
                }
            }
            Op::Size => storage.size(req.kind, &req.name).map(|n| {
                let mut w = Writer::new();
                w.varint(n);
                w.buf
            }),
            Op::Put => storage.put(req.kind, &req.name, body).map(|()| Vec::new()),
            Op::List => storage.list(req.kind).map(|list| {
                let mut w = Writer::new();
                w.varint(list.len() as u64);
                for o in list {
                    w.bytes(o.name.as_bytes()).varint(o.size);
                }
                w.buf
            }),
            Op::Delete => storage.delete(req.kind, &req.name).map(|()| Vec::new()),
            Op::PutBegin => begin(storage, &req).map(|u| {
                upload = Some(u);
                Vec::new()
            }),
            Op::PutData => match &mut upload {
                Some(u) if u.len + body.len() as u64 <= MAX_UPLOAD => {
                    u.len += body.len() as u64;
                    u.file
                        .write_all(body)
                        .map(|()| Vec::new())
                        .map_err(|e| Error::io("write", &u.path, e))
                }
                Some(_) => {
                    upload = None;
                    Err(Error::Refused(format!(
                        "upload larger than {MAX_UPLOAD} bytes"
                    )))
                }
                None => Err(Error::io(
                    "upload",
                    &req.name,
                    std::io::Error::other("data without PutBegin"),
                )),
            },
            Op::PutEnd => match upload.take() {
                Some(u) if u.kind == req.kind && u.name == req.name => u
                    .file
                    .sync_all()
                    .map_err(|e| Error::io("sync", &u.path, e))
                    .and_then(|()| storage.put_file(u.kind, &u.name, &u.path))
                    .map(|()| Vec::new()),
                _ => Err(Error::io(
                    "upload",
                    &req.name,
                    std::io::Error::other("PutEnd without a matching PutBegin"),
                )),
            },
        };
        match result {
            Ok(body) => reply(out, Status::Ok, &body)?,
            Err(e) => reply(out, status_of(&e), e.to_string().as_bytes())?,
        }
    }
    Ok(())
}

fn begin(storage: &GuardedStorage, req: &Request) -> Result<Upload, Error> {
    // Refuse early what the end would refuse anyway (role, name).
    storage.admit_put(req.kind, &req.name)?;
    let dir = storage.staging_dir()?;
    let rnd = cairn_crypto::random::<12>().unwrap_or_default();
    let path = dir.join(format!(
        "upload-{}-{}.tmp",
        std::process::id(),
        hex::encode(rnd)
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    Ok(Upload {
        kind: req.kind,
        name: req.name.clone(),
        file,
        path,
        len: 0,
    })
}
