//! The storage protocol (`docs/protocol.md`) a client speaks to a Cairn
//! server over a byte stream (`cairn serve --stdio` behind SSH, and the same requests over
//! HTTPS later): one request frame, one response frame, in order.
//!
//! ```text
//! hello    client → "CAIRNRP1"            server → "CAIRNRP1" | bytes(role)
//! request  u32le length | op u8 | kind u8 | bytes(name) | varint offset | varint len | body
//! response u32le length | status u8 | body
//! ```
//!
//! Uploads of whole files go in pieces (`PutBegin`, `PutData`…,
//! `PutEnd`), so neither side holds a pack in memory; the server stages
//! them and publishes only after checking them. Frames are bounded
//! ([`MAX_FRAME`]): a peer announcing more is cut off, never served.

use std::io::{Read, Write};

use cairn_format::wire::{Reader, Writer};
use cairn_storage::Kind;

/// Protocol magic and version.
pub const HELLO: &[u8; 8] = b"CAIRNRP1";
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 8 << 20;
/// Bytes of an upload sent per `PutData` frame.
pub const PUT_PIECE: usize = 4 << 20;

/// Request operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Whole object (small kinds only; packs are read in ranges).
    Get = 1,
    /// `len` bytes at `offset`.
    GetRange = 2,
    /// Object size.
    Size = 3,
    /// Create an object from the body.
    Put = 4,
    /// Listing of a kind.
    List = 5,
    /// Delete.
    Delete = 6,
    /// Start a staged upload of `name`.
    PutBegin = 7,
    /// Append the body to the staged upload.
    PutData = 8,
    /// Check and publish the staged upload.
    PutEnd = 9,
}

impl Op {
    fn from_u8(b: u8) -> Option<Op> {
        Some(match b {
            1 => Op::Get,
            2 => Op::GetRange,
            3 => Op::Size,
            4 => Op::Put,
            5 => Op::List,
            6 => Op::Delete,
            7 => Op::PutBegin,
            8 => Op::PutData,
            9 => Op::PutEnd,
            _ => return None,
        })
    }
}

/// Response statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Done; the body holds the result.
    Ok = 0,
    /// No such object.
    NotFound = 1,
    /// An object of that name exists (create-only kinds).
    AlreadyExists = 2,
    /// The caller's role does not allow it.
    Refused = 3,
    /// The object is shorter than the range asked for.
    Short = 4,
    /// Anything else; the body says what.
    Failed = 5,
}

impl Status {
    /// Parses a status byte.
    pub fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::AlreadyExists,
            3 => Status::Refused,
            4 => Status::Short,
            5 => Status::Failed,
            _ => return None,
        })
    }
}

/// The one-byte code of a kind.
pub fn kind_code(k: Kind) -> u8 {
    match k {
        Kind::Config => 0,
        Kind::Key => 1,
        Kind::Pack => 2,
        Kind::Index => 3,
        Kind::Snapshot => 4,
        Kind::Lock => 5,
        Kind::Garbage => 6,
        Kind::Protect => 7,
        Kind::Receipt => 8,
        Kind::Origin => 9,
    }
}

/// The kind of a code.
pub fn kind_of(b: u8) -> Option<Kind> {
    Some(match b {
        0 => Kind::Config,
        1 => Kind::Key,
        2 => Kind::Pack,
        3 => Kind::Index,
        4 => Kind::Snapshot,
        5 => Kind::Lock,
        6 => Kind::Garbage,
        7 => Kind::Protect,
        8 => Kind::Receipt,
        9 => Kind::Origin,
        _ => return None,
    })
}

/// A decoded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub op: Op,
    /// On which kind.
    pub kind: Kind,
    /// On which object.
    pub name: String,
    /// Range start.
    pub offset: u64,
    /// Range length.
    pub len: u64,
    /// Upload bytes.
    pub body: Vec<u8>,
}

impl Request {
    /// Encodes the frame payload (without the length).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.encode_head();
        out.extend_from_slice(&self.body);
        out
    }

    /// The request without its body, for a frame whose body is written
    /// from the sender's own buffer ([`write_frame_parts`]).
    pub fn encode_head(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.op as u8)
            .u8(kind_code(self.kind))
            .bytes(self.name.as_bytes())
            .varint(self.offset)
            .varint(self.len);
        w.buf
    }

    /// Decodes a frame payload.
    pub fn decode(data: &[u8]) -> Result<Request, String> {
        let (mut req, at) = Request::decode_head(data)?;
        req.body = data[at..].to_vec();
        Ok(req)
    }

    /// The request with an empty body, and where its body starts in
    /// `data`: the server writes an upload's pieces from the frame it
    /// read, without copying them.
    pub fn decode_head(data: &[u8]) -> Result<(Request, usize), String> {
        let mut r = Reader::new(data, "request");
        let e = |e: cairn_format::Error| e.to_string();
        let op = Op::from_u8(r.u8().map_err(e)?).ok_or("unknown operation")?;
        let kind = kind_of(r.u8().map_err(e)?).ok_or("unknown object kind")?;
        let name = String::from_utf8(r.bytes().map_err(e)?.to_vec())
            .map_err(|_| "object name is not UTF-8".to_string())?;
        let offset = r.varint().map_err(e)?;
        let len = r.varint().map_err(e)?;
        Ok((
            Request {
                op,
                kind,
                name,
                offset,
                len,
                body: Vec::new(),
            },
            r.pos(),
        ))
    }
}

/// Writes one frame.
pub fn write_frame(w: &mut dyn Write, payload: &[u8]) -> std::io::Result<()> {
    write_frame_parts(w, &[payload])
}

/// Writes one frame whose payload is `parts` back to back, so a piece of
/// an upload goes out from the buffer it was read into.
pub fn write_frame_parts(w: &mut dyn Write, parts: &[&[u8]]) -> std::io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let n = u32::try_from(total)
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("frame too large"))?;
    w.write_all(&n.to_le_bytes())?;
    for p in parts {
        w.write_all(p)?;
    }
    w.flush()
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(r: &mut dyn Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    Ok(read_frame_into(r, &mut buf)?.then_some(buf))
}

/// Reads one frame into `buf`, reusing its memory; `false` at a clean end
/// of the stream. A server reads thousands of 4 MiB pieces: a fresh buffer
/// each was a fresh mapping, faulted in and zeroed, a quarter of its CPU.
pub fn read_frame_into(r: &mut dyn Read, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("peer sent a frame of {n} bytes, more than the {MAX_FRAME} allowed"),
        ));
    }
    // Checked against MAX_FRAME above: the peer's length is trusted with
    // no more than 8 MiB.
    buf.resize(n, 0);
    r.read_exact(buf)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_frames_are_bounded() {
        let q = Request {
            op: Op::GetRange,
            kind: Kind::Pack,
            name: "ab".repeat(32),
            offset: 1 << 40,
            len: 77,
            body: b"xyz".to_vec(),
        };
        assert_eq!(Request::decode(&q.encode()).unwrap(), q);
        assert!(Request::decode(&[99, 2]).is_err());
        assert!(Request::decode(&[1, 42]).is_err());
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        assert_eq!(read_frame(&mut &buf[..]).unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut &[][..]).unwrap(), None);
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(read_frame(&mut &huge[..]).is_err());

        // A frame written in parts reads back whole, and a reused buffer
        // holds exactly the next frame, however large the last one was.
        let mut buf = Vec::new();
        let head = q.encode_head();
        write_frame_parts(&mut buf, &[&head, b"xyz"]).unwrap();
        write_frame(&mut buf, b"hi").unwrap();
        let mut r = &buf[..];
        let mut frame = vec![7u8; 100];
        assert!(read_frame_into(&mut r, &mut frame).unwrap());
        assert_eq!(Request::decode(&frame).unwrap(), q);
        let (head_only, at) = Request::decode_head(&frame).unwrap();
        assert_eq!((&head_only.body[..], &frame[at..]), (&b""[..], &b"xyz"[..]));
        assert!(read_frame_into(&mut r, &mut frame).unwrap());
        assert_eq!(frame, b"hi");
        assert!(!read_frame_into(&mut r, &mut frame).unwrap());
    }
}
