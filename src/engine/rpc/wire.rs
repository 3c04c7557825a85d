//! The few messages of ggml's RPC protocol that olm speaks itself, before
//! llama.cpp does: the handshake (`HELLO`, which carries the protocol
//! version), the device count and each device's memory. With them olm
//! refuses a worker of another version, or one that does not answer, with a
//! clear error and a bounded wait, where llama.cpp would abort or block.
//!
//! Pure: frames in, frames out (the socket is the caller's). The layouts are
//! those of `ggml/src/ggml-rpc/ggml-rpc.cpp` in the vendored llama.cpp:
//! a request is `cmd (1 byte) | size (u64) | payload`, a response
//! `size (u64) | payload`, integers in the machine's byte order (little
//! endian on every platform llama.cpp's RPC backend runs on).

use std::fmt;
use std::io::Read;

/// `RPC_CMD_GET_DEVICE_MEMORY`: request `u32 device`, response `u64 free, u64 total`.
pub const CMD_GET_DEVICE_MEMORY: u8 = 11;
/// `RPC_CMD_HELLO`: always 14, in every version of the protocol.
pub const CMD_HELLO: u8 = 14;
/// `RPC_CMD_DEVICE_COUNT`: empty request, response `u32 count`.
pub const CMD_DEVICE_COUNT: u8 = 15;

/// `RPC_CONN_CAPS_SIZE`: transport capabilities in the handshake (all zero:
/// olm asks for plain TCP).
const CONN_CAPS_SIZE: usize = 24;
/// `rpc_msg_hello_rsp`: major, minor, patch, padding, capabilities.
const HELLO_RESPONSE_SIZE: usize = 4 + CONN_CAPS_SIZE;
/// Devices one worker may offer (`GGML_RPC_MAX_SERVERS` bounds servers, not
/// devices; a worker with more GPUs than this is not a machine olm knows).
pub const MAX_DEVICES: u32 = 64;

/// An RPC protocol version (`RPC_PROTO_*_VERSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    pub patch: u8,
}

impl fmt::Display for Version {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The protocol of the vendored llama.cpp (`ggml/include/ggml-rpc.h`). Its
/// patch number changes with ggml's list of operations, which a graph names
/// by number, so olm wants all three equal (llama.cpp checks only major and
/// minor). A test holds this equal to what `olm worker` answers.
pub const PROTOCOL: Version = Version {
    major: 7,
    minor: 0,
    patch: 0,
};

/// What a frame from a worker did wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("a {what} response of {got} bytes, expected {expected}")]
    Size {
        what: &'static str,
        got: u64,
        expected: usize,
    },
    #[error("{0} devices")]
    DeviceCount(u32),
}

/// One request frame.
pub fn request(command: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(9 + payload.len());
    frame.push(command);
    frame.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The handshake olm sends: no transport upgrade asked for.
pub fn hello() -> Vec<u8> {
    request(CMD_HELLO, &[0; CONN_CAPS_SIZE])
}

pub fn device_count() -> Vec<u8> {
    request(CMD_DEVICE_COUNT, &[])
}

pub fn device_memory(device: u32) -> Vec<u8> {
    request(CMD_GET_DEVICE_MEMORY, &device.to_le_bytes())
}

/// Read one response whose payload must be `expected` bytes long; a size
/// field that disagrees is refused before anything more is read.
pub fn read_response(
    reader: &mut impl Read,
    what: &'static str,
    expected: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut size = [0u8; 8];
    reader.read_exact(&mut size)?;
    let size = u64::from_le_bytes(size);
    if size != expected as u64 {
        return Err(ReadError::Wire(WireError::Size {
            what,
            got: size,
            expected,
        }));
    }
    let mut payload = vec![0u8; expected];
    reader.read_exact(&mut payload)?;
    Ok(payload)
}

/// A response that could not be read: the socket failed, or the frame is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

pub fn hello_size() -> usize {
    HELLO_RESPONSE_SIZE
}

/// The version in a `HELLO` response payload.
pub fn parse_hello(payload: &[u8]) -> Version {
    Version {
        major: payload.first().copied().unwrap_or(0),
        minor: payload.get(1).copied().unwrap_or(0),
        patch: payload.get(2).copied().unwrap_or(0),
    }
}

/// The device count in a `DEVICE_COUNT` response payload (4 bytes).
pub fn parse_device_count(payload: &[u8]) -> Result<u32, WireError> {
    let count = u32::from_le_bytes(take::<4>(payload));
    if count == 0 || count > MAX_DEVICES {
        return Err(WireError::DeviceCount(count));
    }
    Ok(count)
}

/// `(free, total)` bytes in a `GET_DEVICE_MEMORY` response payload (16 bytes).
pub fn parse_device_memory(payload: &[u8]) -> (u64, u64) {
    let free = u64::from_le_bytes(take::<8>(payload));
    let total = u64::from_le_bytes(take::<8>(payload.get(8..).unwrap_or_default()));
    (free, total)
}

fn take<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    for (slot, byte) in out.iter_mut().zip(bytes) {
        *slot = *byte;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_layout_of_ggml_rpc() {
        let frame = hello();
        assert_eq!(frame.len(), 1 + 8 + 24);
        assert_eq!(frame[0], 14);
        assert_eq!(&frame[1..9], &24u64.to_le_bytes());
        assert!(frame[9..].iter().all(|&b| b == 0));
        assert_eq!(device_count(), [15, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(device_memory(2)[9..], [2, 0, 0, 0]);
    }

    #[test]
    fn responses_of_the_wrong_size_are_refused_before_their_payload() {
        let mut wrong = &[3u8, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0][..];
        match read_response(&mut wrong, "HELLO", hello_size()) {
            Err(ReadError::Wire(WireError::Size { got: 3, .. })) => {}
            other => panic!("{other:?}"),
        }
        // A size of 2^63 is refused without allocating it.
        let mut huge = &[0u8, 0, 0, 0, 0, 0, 0, 0x80][..];
        assert!(matches!(
            read_response(&mut huge, "HELLO", hello_size()),
            Err(ReadError::Wire(_))
        ));
        let mut short = &[28u8, 0, 0, 0, 0, 0, 0, 0, 7][..];
        assert!(matches!(
            read_response(&mut short, "HELLO", hello_size()),
            Err(ReadError::Io(_))
        ));
    }

    #[test]
    fn payloads_are_decoded() {
        let mut hello = vec![7, 0, 0, 0];
        hello.extend([0; 24]);
        assert_eq!(parse_hello(&hello), PROTOCOL);
        assert_eq!(PROTOCOL.to_string(), "7.0.0");
        assert_eq!(parse_device_count(&1u32.to_le_bytes()), Ok(1));
        assert_eq!(
            parse_device_count(&0u32.to_le_bytes()),
            Err(WireError::DeviceCount(0))
        );
        assert!(parse_device_count(&1000u32.to_le_bytes()).is_err());
        let mut memory = 5u64.to_le_bytes().to_vec();
        memory.extend(9u64.to_le_bytes());
        assert_eq!(parse_device_memory(&memory), (5, 9));
    }
}
