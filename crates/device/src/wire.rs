//! The command format devices receive: what the hub's transform step hands to a party to
//! sign, and what a device decodes and verifies itself. Binary, fixed layout, versioned:
//!
//! ```text
//! "MHC1"                     4 bytes  magic and version
//! srv length, srv            1 + n    SRV code, ASCII (e.g. "8.1.1")
//! originator                 8        EUI-64 of the sending party
//! target                     8        EUI-64 of the device
//! counter                    8        strictly increasing per originator (big-endian)
//! execute_at                 8        Unix seconds; 0 = at once (big-endian, signed)
//! body length, body          4 + n    canonical JSON of the SRV's body
//! ```
//!
//! A critical command travels with an ECDSA P-256/SHA-256 signature (ASN.1 DER) over exactly
//! these bytes; the device decodes what it verified, never a copy parsed elsewhere.

use std::fmt;

use domain::Eui64;
use jiff::Timestamp;

const MAGIC: &[u8; 4] = b"MHC1";
/// Longest SRV code.
const SRV_LEN_MAX: usize = 16;
/// Largest command body.
pub const BODY_BYTES_MAX: usize = 64 * 1024;

/// DUIS request id: `originator:target:counter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId {
    pub originator: Eui64,
    pub target: Eui64,
    pub counter: u64,
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.originator, self.target, self.counter)
    }
}

impl RequestId {
    pub fn parse(s: &str) -> Result<RequestId, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [o, t, c] = parts.as_slice() else {
            return Err("a request id is originatorEUI:targetEUI:counter".into());
        };
        Ok(RequestId {
            originator: Eui64::parse(o).map_err(|e| e.to_string())?,
            target: Eui64::parse(t).map_err(|e| e.to_string())?,
            counter: c.parse().map_err(|_| "the counter is a whole number".to_string())?,
        })
    }
}

/// A command to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub id: RequestId,
    pub srv: String,
    pub execute_at: Option<Timestamp>,
    /// Canonical JSON.
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed command: {0}")]
pub struct WireError(pub &'static str);

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.srv.len() <= SRV_LEN_MAX && self.srv.is_ascii(), "SRV codes are short ASCII");
        assert!(self.body.len() <= BODY_BYTES_MAX, "bodies are bounded");
        let mut out = Vec::with_capacity(4 + 1 + self.srv.len() + 32 + 4 + self.body.len());
        out.extend_from_slice(MAGIC);
        out.push(self.srv.len() as u8);
        out.extend_from_slice(self.srv.as_bytes());
        out.extend_from_slice(&self.id.originator.as_u64().to_be_bytes());
        out.extend_from_slice(&self.id.target.as_u64().to_be_bytes());
        out.extend_from_slice(&self.id.counter.to_be_bytes());
        out.extend_from_slice(&self.execute_at.map_or(0, |t| t.as_second()).to_be_bytes());
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, WireError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4)? != MAGIC {
            return Err(WireError("not a meterhub command (bad magic)"));
        }
        let srv_len = usize::from(r.take(1)?[0]);
        if srv_len == 0 || srv_len > SRV_LEN_MAX {
            return Err(WireError("SRV code length"));
        }
        let srv = std::str::from_utf8(r.take(srv_len)?)
            .ok()
            .filter(|s| s.is_ascii())
            .ok_or(WireError("SRV code is not ASCII"))?
            .to_string();
        let originator = Eui64::from_u64(r.u64()?);
        let target = Eui64::from_u64(r.u64()?);
        let counter = r.u64()?;
        let at = r.u64()? as i64;
        let execute_at = if at == 0 {
            None
        } else {
            Some(Timestamp::from_second(at).map_err(|_| WireError("execution time out of range"))?)
        };
        let len = u32::from_be_bytes(r.take(4)?.try_into().expect("4 bytes")) as usize;
        if len > BODY_BYTES_MAX {
            return Err(WireError("body too large"));
        }
        let body = r.take(len)?.to_vec();
        if r.at != bytes.len() {
            return Err(WireError("trailing bytes"));
        }
        Ok(Command { id: RequestId { originator, target, counter }, srv, execute_at, body })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or(WireError("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}
