//! Thrift decoding of the Jaeger IDL (`jaeger.thrift`: `Batch`, `Process`, `Span`, `Tag`,
//! `Log`, `SpanRef`; `agent.thrift`: the `Agent.emitBatch` message) in the binary and
//! compact protocols. Decoding only, over a byte slice.
//!
//! Hostile input is bounded: every length is checked against the bytes left before
//! anything is allocated (each element of a list takes at least one byte), unknown fields
//! of any type are skipped with nesting limited to [`MAX_DEPTH`], and a field of an
//! unexpected type is skipped as the Go Thrift code that contrib uses does. Required
//! fields of the IDL must be present. Errors carry the byte offset and the path of the
//! field (`Batch.spans[2].tags[0].vStr`).

use std::fmt;

use super::{Batch, Log, Process, Span, SpanRef, Tag, TagValue};

/// Deepest nesting of structs and containers that is skipped; the Jaeger IDL needs 4.
pub const MAX_DEPTH: usize = 32;

/// Why a Thrift payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThriftError {
    offset: usize,
    path: String,
    problem: String,
}

impl ThriftError {
    fn new(offset: usize, problem: impl Into<String>) -> ThriftError {
        ThriftError {
            offset,
            path: String::new(),
            problem: problem.into(),
        }
    }

    /// Prefixes the field path with the enclosing segment.
    fn within(mut self, segment: &str) -> ThriftError {
        self.path = if self.path.is_empty() {
            segment.to_owned()
        } else {
            format!("{segment}.{}", self.path)
        };
        self
    }
}

impl fmt::Display for ThriftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "at byte {}: {}", self.offset, self.problem)
        } else {
            write!(f, "{} at byte {}: {}", self.path, self.offset, self.problem)
        }
    }
}

impl std::error::Error for ThriftError {}

type Result<T> = std::result::Result<T, ThriftError>;

/// Which Thrift protocol a payload is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThriftProtocol {
    Binary,
    Compact,
}

/// Decodes a bare `Batch` struct (the `thrift_http` body).
///
/// # Errors
/// The bytes are not a well-formed `Batch` in `protocol`.
pub fn decode_batch(bytes: &[u8], protocol: ThriftProtocol) -> Result<Batch> {
    match protocol {
        ThriftProtocol::Binary => {
            let mut reader = BinaryReader::new(bytes);
            let batch = read_batch(&mut reader).map_err(|e| e.within("Batch"))?;
            reader.finish()?;
            Ok(batch)
        }
        ThriftProtocol::Compact => {
            let mut reader = CompactReader::new(bytes);
            let batch = read_batch(&mut reader).map_err(|e| e.within("Batch"))?;
            reader.finish()?;
            Ok(batch)
        }
    }
}

/// Decodes an `Agent.emitBatch` call (a UDP datagram from a Jaeger client).
///
/// # Errors
/// The message header is malformed, names another method, or its `Batch` is malformed.
pub fn decode_agent_message(bytes: &[u8], protocol: ThriftProtocol) -> Result<Batch> {
    match protocol {
        ThriftProtocol::Binary => read_emit_batch(&mut BinaryReader::new(bytes)),
        ThriftProtocol::Compact => read_emit_batch(&mut CompactReader::new(bytes)),
    }
}

// ------------------------------------------------------------------- types

/// Thrift value types, whatever the protocol's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TType {
    Bool,
    Byte,
    Double,
    I16,
    I32,
    I64,
    String,
    Struct,
    Map,
    Set,
    List,
}

impl TType {
    fn from_binary(id: u8) -> Option<TType> {
        Some(match id {
            2 => TType::Bool,
            3 => TType::Byte,
            4 => TType::Double,
            6 => TType::I16,
            8 => TType::I32,
            10 => TType::I64,
            11 => TType::String,
            12 => TType::Struct,
            13 => TType::Map,
            14 => TType::Set,
            15 => TType::List,
            _ => return None,
        })
    }

    fn from_compact(id: u8) -> Option<TType> {
        Some(match id {
            1 | 2 => TType::Bool,
            3 => TType::Byte,
            4 => TType::I16,
            5 => TType::I32,
            6 => TType::I64,
            7 => TType::Double,
            8 => TType::String,
            9 => TType::List,
            10 => TType::Set,
            11 => TType::Map,
            12 => TType::Struct,
            _ => return None,
        })
    }
}

/// Message types of a Thrift message header.
const MESSAGE_CALL: u8 = 1;
const MESSAGE_ONEWAY: u8 = 4;

/// What the readers of the IDL structs need from a protocol.
trait Protocol<'a> {
    fn offset(&self) -> usize;
    /// Bytes not read yet.
    fn remaining(&self) -> usize;
    fn struct_begin(&mut self) -> Result<()>;
    fn struct_end(&mut self);
    /// The next field's type and ID, or `None` at the end of the struct.
    fn field_begin(&mut self) -> Result<Option<(TType, i16)>>;
    fn read_bool(&mut self) -> Result<bool>;
    fn read_byte(&mut self) -> Result<i8>;
    fn read_i16(&mut self) -> Result<i16>;
    fn read_i32(&mut self) -> Result<i32>;
    fn read_i64(&mut self) -> Result<i64>;
    fn read_double(&mut self) -> Result<f64>;
    fn read_binary(&mut self) -> Result<&'a [u8]>;
    /// A list or set header: element type and count.
    fn list_begin(&mut self) -> Result<(Option<TType>, usize)>;
    /// A map header: key type, value type and count.
    fn map_begin(&mut self) -> Result<(Option<TType>, Option<TType>, usize)>;
    /// A message header: name and type.
    fn message_begin(&mut self) -> Result<(&'a [u8], u8)>;

    fn read_string(&mut self) -> Result<String> {
        // Go's Thrift does not check UTF-8; OTLP strings must be, so bad bytes are replaced.
        Ok(String::from_utf8_lossy(self.read_binary()?).into_owned())
    }

    /// A count checked against the bytes left: every element takes at least one byte.
    fn checked_count(&self, count: i64, what: &str) -> Result<usize> {
        let remaining = self.remaining();
        match usize::try_from(count) {
            Ok(count) if count <= remaining => Ok(count),
            Ok(count) => Err(ThriftError::new(
                self.offset(),
                format!("{what} length {count} exceeds the {remaining} bytes left"),
            )),
            Err(_) => Err(ThriftError::new(
                self.offset(),
                format!("negative {what} size {count}"),
            )),
        }
    }
}

/// A byte slice being read front to back.
#[derive(Debug)]
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize, what: &str) -> Result<&'a [u8]> {
        let left = self.bytes.len() - self.position;
        if count > left {
            return Err(ThriftError::new(
                self.position,
                format!("truncated: {what} needs {count} bytes, {left} left"),
            ));
        }
        let slice = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N, what)?);
        Ok(array)
    }

    fn byte(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn finish(&self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            left => Err(ThriftError::new(
                self.position,
                format!("{left} bytes after the end of the Batch"),
            )),
        }
    }
}

// ----------------------------------------------------------------- binary

#[derive(Debug)]
struct BinaryReader<'a> {
    cursor: Cursor<'a>,
}

impl<'a> BinaryReader<'a> {
    fn new(bytes: &'a [u8]) -> BinaryReader<'a> {
        BinaryReader {
            cursor: Cursor { bytes, position: 0 },
        }
    }

    fn finish(&self) -> Result<()> {
        self.cursor.finish()
    }

    fn length(&mut self, what: &str) -> Result<usize> {
        let length = i64::from(i32::from_be_bytes(self.cursor.array(what)?));
        self.checked_count(length, what)
    }
}

impl<'a> Protocol<'a> for BinaryReader<'a> {
    fn offset(&self) -> usize {
        self.cursor.position
    }

    fn remaining(&self) -> usize {
        self.cursor.remaining()
    }

    fn struct_begin(&mut self) -> Result<()> {
        Ok(())
    }

    fn struct_end(&mut self) {}

    fn field_begin(&mut self) -> Result<Option<(TType, i16)>> {
        let offset = self.offset();
        let type_id = self.cursor.byte("field type")?;
        if type_id == 0 {
            return Ok(None);
        }
        let field_type = TType::from_binary(type_id).ok_or_else(|| {
            ThriftError::new(offset, format!("unknown binary protocol type {type_id}"))
        })?;
        let id = i16::from_be_bytes(self.cursor.array("field id")?);
        Ok(Some((field_type, id)))
    }

    fn read_bool(&mut self) -> Result<bool> {
        Ok(self.cursor.byte("bool")? != 0)
    }

    fn read_byte(&mut self) -> Result<i8> {
        Ok(i8::from_be_bytes(self.cursor.array("byte")?))
    }

    fn read_i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.cursor.array("i16")?))
    }

    fn read_i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.cursor.array("i32")?))
    }

    fn read_i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.cursor.array("i64")?))
    }

    fn read_double(&mut self) -> Result<f64> {
        Ok(f64::from_bits(u64::from_be_bytes(
            self.cursor.array("double")?,
        )))
    }

    fn read_binary(&mut self) -> Result<&'a [u8]> {
        let length = self.length("string")?;
        self.cursor.take(length, "string")
    }

    fn list_begin(&mut self) -> Result<(Option<TType>, usize)> {
        let element = TType::from_binary(self.cursor.byte("list element type")?);
        let count = self.length("list")?;
        Ok((element, count))
    }

    fn map_begin(&mut self) -> Result<(Option<TType>, Option<TType>, usize)> {
        let key = TType::from_binary(self.cursor.byte("map key type")?);
        let value = TType::from_binary(self.cursor.byte("map value type")?);
        let count = self.length("map")?;
        Ok((key, value, count))
    }

    fn message_begin(&mut self) -> Result<(&'a [u8], u8)> {
        let offset = self.offset();
        let first = i32::from_be_bytes(self.cursor.array("message header")?);
        if first < 0 {
            // Strict: version in the high half, type in the low byte.
            let version = (first as u32) & 0xffff_0000;
            if version != 0x8001_0000 {
                return Err(ThriftError::new(
                    offset,
                    format!("unsupported binary protocol version {version:#010x}"),
                ));
            }
            let message_type = (first & 0xff) as u8;
            let name = self.read_binary()?;
            self.read_i32()?; // sequence ID
            Ok((name, message_type))
        } else {
            // Old non-strict form: the name's length comes first.
            let length = self.checked_count(i64::from(first), "message name")?;
            let name = self.cursor.take(length, "message name")?;
            let message_type = self.cursor.byte("message type")?;
            self.read_i32()?;
            Ok((name, message_type))
        }
    }
}

// ---------------------------------------------------------------- compact

/// Protocol ID and version of a compact message header.
const COMPACT_PROTOCOL_ID: u8 = 0x82;
const COMPACT_VERSION: u8 = 1;

#[derive(Debug)]
struct CompactReader<'a> {
    cursor: Cursor<'a>,
    /// Field IDs are deltas from the previous field of the same struct.
    last_field: i16,
    enclosing_fields: Vec<i16>,
    /// A bool field's value travels in its field header.
    pending_bool: Option<bool>,
}

impl<'a> CompactReader<'a> {
    fn new(bytes: &'a [u8]) -> CompactReader<'a> {
        CompactReader {
            cursor: Cursor { bytes, position: 0 },
            last_field: 0,
            enclosing_fields: Vec::new(),
            pending_bool: None,
        }
    }

    fn finish(&self) -> Result<()> {
        self.cursor.finish()
    }

    fn varint(&mut self, what: &str) -> Result<u64> {
        let offset = self.offset();
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = self.cursor.byte(what)?;
            if shift == 63 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ThriftError::new(
            offset,
            format!("{what}: varint longer than 64 bits"),
        ))
    }

    fn zigzag(&mut self, what: &str) -> Result<i64> {
        let raw = self.varint(what)?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    fn narrow<T: TryFrom<i64>>(&self, value: i64, what: &str) -> Result<T> {
        T::try_from(value)
            .map_err(|_| ThriftError::new(self.offset(), format!("{what} {value} out of range")))
    }

    fn length(&mut self, what: &str) -> Result<usize> {
        let length = self.varint(what)?;
        self.checked_count(i64::try_from(length).unwrap_or(i64::MAX), what)
    }
}

impl<'a> Protocol<'a> for CompactReader<'a> {
    fn offset(&self) -> usize {
        self.cursor.position
    }

    fn remaining(&self) -> usize {
        self.cursor.remaining()
    }

    fn struct_begin(&mut self) -> Result<()> {
        if self.enclosing_fields.len() >= MAX_DEPTH {
            return Err(ThriftError::new(
                self.offset(),
                format!("structs nested deeper than {MAX_DEPTH}"),
            ));
        }
        self.enclosing_fields.push(self.last_field);
        self.last_field = 0;
        Ok(())
    }

    fn struct_end(&mut self) {
        self.last_field = self.enclosing_fields.pop().unwrap_or(0);
    }

    fn field_begin(&mut self) -> Result<Option<(TType, i16)>> {
        let offset = self.offset();
        let header = self.cursor.byte("field header")?;
        if header == 0 {
            return Ok(None);
        }
        let type_id = header & 0x0f;
        let field_type = TType::from_compact(type_id).ok_or_else(|| {
            ThriftError::new(offset, format!("unknown compact protocol type {type_id}"))
        })?;
        let delta = i16::from(header >> 4);
        let id = if delta == 0 {
            let id = self.zigzag("field id")?;
            self.narrow(id, "field id")?
        } else {
            self.last_field.wrapping_add(delta)
        };
        self.last_field = id;
        if field_type == TType::Bool {
            self.pending_bool = Some(type_id == 1);
        }
        Ok(Some((field_type, id)))
    }

    fn read_bool(&mut self) -> Result<bool> {
        match self.pending_bool.take() {
            Some(value) => Ok(value),
            // Inside a list: one byte, 1 for true.
            None => Ok(self.cursor.byte("bool")? == 1),
        }
    }

    fn read_byte(&mut self) -> Result<i8> {
        Ok(i8::from_be_bytes(self.cursor.array("byte")?))
    }

    fn read_i16(&mut self) -> Result<i16> {
        let value = self.zigzag("i16")?;
        self.narrow(value, "i16")
    }

    fn read_i32(&mut self) -> Result<i32> {
        let value = self.zigzag("i32")?;
        self.narrow(value, "i32")
    }

    fn read_i64(&mut self) -> Result<i64> {
        self.zigzag("i64")
    }

    fn read_double(&mut self) -> Result<f64> {
        Ok(f64::from_bits(u64::from_le_bytes(
            self.cursor.array("double")?,
        )))
    }

    fn read_binary(&mut self) -> Result<&'a [u8]> {
        let length = self.length("string")?;
        self.cursor.take(length, "string")
    }

    fn list_begin(&mut self) -> Result<(Option<TType>, usize)> {
        let header = self.cursor.byte("list header")?;
        let element = TType::from_compact(header & 0x0f);
        let short_count = usize::from(header >> 4);
        let count = if short_count == 15 {
            self.length("list")?
        } else {
            self.checked_count(short_count as i64, "list")?
        };
        Ok((element, count))
    }

    fn map_begin(&mut self) -> Result<(Option<TType>, Option<TType>, usize)> {
        let count = self.length("map")?;
        if count == 0 {
            return Ok((None, None, 0));
        }
        let types = self.cursor.byte("map types")?;
        Ok((
            TType::from_compact(types >> 4),
            TType::from_compact(types & 0x0f),
            count,
        ))
    }

    fn message_begin(&mut self) -> Result<(&'a [u8], u8)> {
        let offset = self.offset();
        let protocol_id = self.cursor.byte("protocol id")?;
        if protocol_id != COMPACT_PROTOCOL_ID {
            return Err(ThriftError::new(
                offset,
                format!("not a compact protocol message (protocol id {protocol_id:#04x}, expected 0x82)"),
            ));
        }
        let version_and_type = self.cursor.byte("message version")?;
        let version = version_and_type & 0x1f;
        if version != COMPACT_VERSION {
            return Err(ThriftError::new(
                offset + 1,
                format!("unsupported compact protocol version {version}"),
            ));
        }
        let message_type = (version_and_type >> 5) & 0x07;
        self.varint("sequence id")?;
        let name = self.read_binary()?;
        Ok((name, message_type))
    }
}

// ------------------------------------------------------------ the IDL

/// Skips a value of any type, bounded in depth.
fn skip<'a, P: Protocol<'a>>(p: &mut P, value_type: TType, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(ThriftError::new(
            p.offset(),
            format!("values nested deeper than {MAX_DEPTH}"),
        ));
    }
    match value_type {
        TType::Bool => p.read_bool().map(drop),
        TType::Byte => p.read_byte().map(drop),
        TType::I16 => p.read_i16().map(drop),
        TType::I32 => p.read_i32().map(drop),
        TType::I64 => p.read_i64().map(drop),
        TType::Double => p.read_double().map(drop),
        TType::String => p.read_binary().map(drop),
        TType::Struct => {
            p.struct_begin()?;
            while let Some((field_type, _)) = p.field_begin()? {
                skip(p, field_type, depth + 1)?;
            }
            p.struct_end();
            Ok(())
        }
        TType::Map => {
            let offset = p.offset();
            let (key, value, count) = p.map_begin()?;
            if count == 0 {
                return Ok(());
            }
            let (Some(key), Some(value)) = (key, value) else {
                return Err(ThriftError::new(offset, "map of an unknown type"));
            };
            for _ in 0..count {
                skip(p, key, depth + 1)?;
                skip(p, value, depth + 1)?;
            }
            Ok(())
        }
        TType::Set | TType::List => {
            let offset = p.offset();
            let (element, count) = p.list_begin()?;
            if count == 0 {
                return Ok(());
            }
            let element =
                element.ok_or_else(|| ThriftError::new(offset, "list of an unknown type"))?;
            for _ in 0..count {
                skip(p, element, depth + 1)?;
            }
            Ok(())
        }
    }
}

/// Reads a struct: `field` handles the fields it knows (returning `false` for a type it
/// does not expect, which is then skipped), `required` names fields that must be present
/// by bit (1 << field ID).
fn read_struct<'a, P, F>(p: &mut P, required: &[(i16, &str)], mut field: F) -> Result<()>
where
    P: Protocol<'a>,
    F: FnMut(&mut P, TType, i16) -> Result<bool>,
{
    p.struct_begin()?;
    let mut seen: u64 = 0;
    while let Some((field_type, id)) = p.field_begin()? {
        if field(p, field_type, id)? {
            if (0..64).contains(&id) {
                seen |= 1 << id;
            }
        } else {
            skip(p, field_type, 1)?;
        }
    }
    p.struct_end();
    for (id, name) in required {
        if seen & (1 << id) == 0 {
            return Err(ThriftError::new(
                p.offset(),
                format!("required field {name} ({id}) is missing"),
            ));
        }
    }
    Ok(())
}

/// Reads a list of structs; elements of another type are an error naming the list.
fn read_list<'a, P, T>(
    p: &mut P,
    name: &str,
    mut element: impl FnMut(&mut P) -> Result<T>,
) -> Result<Vec<T>>
where
    P: Protocol<'a>,
{
    let offset = p.offset();
    let (element_type, count) = p.list_begin().map_err(|e| e.within(name))?;
    if count > 0 && element_type != Some(TType::Struct) {
        return Err(ThriftError::new(
            offset,
            format!("{name} must be a list of structs, found {element_type:?}"),
        ));
    }
    let mut items = Vec::with_capacity(count.min(1024));
    for index in 0..count {
        let item = element(p).map_err(|e| e.within(&format!("{name}[{index}]")))?;
        items.push(item);
    }
    Ok(items)
}

const ZIPKIN_BATCH_UNSUPPORTED: &str =
    "Agent.emitZipkinBatch is not supported (send Zipkin v2 JSON to the zipkin receiver)";

fn read_emit_batch<'a, P: Protocol<'a>>(p: &mut P) -> Result<Batch> {
    let (name, message_type) = p.message_begin()?;
    let offset = p.offset();
    if message_type != MESSAGE_CALL && message_type != MESSAGE_ONEWAY {
        return Err(ThriftError::new(
            offset,
            format!("message type {message_type} is not a call"),
        ));
    }
    match name {
        b"emitBatch" => {}
        b"emitZipkinBatch" => return Err(ThriftError::new(offset, ZIPKIN_BATCH_UNSUPPORTED)),
        other => {
            return Err(ThriftError::new(
                offset,
                format!(
                    "unknown method {:?} (expected Agent.emitBatch)",
                    String::from_utf8_lossy(other)
                ),
            ))
        }
    }
    let mut batch = None;
    read_struct(p, &[(1, "batch")], |p, field_type, id| {
        if (id, field_type) == (1, TType::Struct) {
            batch = Some(read_batch(p).map_err(|e| e.within("Batch"))?);
            return Ok(true);
        }
        Ok(false)
    })
    .map_err(|e| e.within("emitBatch"))?;
    Ok(batch.unwrap_or_default())
}

fn read_batch<'a, P: Protocol<'a>>(p: &mut P) -> Result<Batch> {
    let mut batch = Batch::default();
    read_struct(p, &[(1, "process"), (2, "spans")], |p, t, id| {
        match (id, t) {
            (1, TType::Struct) => {
                batch.process = Some(read_process(p).map_err(|e| e.within("process"))?);
            }
            (2, TType::List) => batch.spans = read_list(p, "spans", read_span)?,
            // seqNo, stats: not needed.
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(batch)
}

fn read_process<'a, P: Protocol<'a>>(p: &mut P) -> Result<Process> {
    let mut process = Process::default();
    read_struct(p, &[(1, "serviceName")], |p, t, id| {
        match (id, t) {
            (1, TType::String) => {
                process.service_name = p.read_string().map_err(|e| e.within("serviceName"))?;
            }
            (2, TType::List) => process.tags = read_list(p, "tags", read_tag)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(process)
}

fn read_tag<'a, P: Protocol<'a>>(p: &mut P) -> Result<Tag> {
    let mut key = String::new();
    let mut value_type = 0;
    let (mut text, mut double, mut flag, mut long, mut binary) =
        (String::new(), 0.0, false, 0, Vec::new());
    read_struct(p, &[(1, "key"), (2, "vType")], |p, t, id| {
        match (id, t) {
            (1, TType::String) => key = p.read_string().map_err(|e| e.within("key"))?,
            (2, TType::I32) => value_type = p.read_i32().map_err(|e| e.within("vType"))?,
            (3, TType::String) => text = p.read_string().map_err(|e| e.within("vStr"))?,
            (4, TType::Double) => double = p.read_double().map_err(|e| e.within("vDouble"))?,
            (5, TType::Bool) => flag = p.read_bool().map_err(|e| e.within("vBool"))?,
            (6, TType::I64) => long = p.read_i64().map_err(|e| e.within("vLong"))?,
            (7, TType::String) => {
                binary = p.read_binary().map_err(|e| e.within("vBinary"))?.to_vec();
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    // `TagType`: STRING, DOUBLE, BOOL, LONG, BINARY.
    let value = match value_type {
        0 => TagValue::Str(text),
        1 => TagValue::Double(double),
        2 => TagValue::Bool(flag),
        3 => TagValue::Long(long),
        4 => TagValue::Binary(binary),
        // What Go's generated `TagType.String()` prints for other values.
        _ => TagValue::Unknown("<UNSET>".to_owned()),
    };
    Ok(Tag { key, value })
}

fn read_log<'a, P: Protocol<'a>>(p: &mut P) -> Result<Log> {
    let mut log = Log::default();
    read_struct(p, &[(1, "timestamp"), (2, "fields")], |p, t, id| {
        match (id, t) {
            (1, TType::I64) => {
                log.time_unix_nano =
                    micros_to_nanos(p.read_i64().map_err(|e| e.within("timestamp"))?);
            }
            (2, TType::List) => log.fields = read_list(p, "fields", read_tag)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(log)
}

fn read_span_ref<'a, P: Protocol<'a>>(p: &mut P) -> Result<SpanRef> {
    let mut reference = SpanRef::default();
    let required = [
        (1, "refType"),
        (2, "traceIdLow"),
        (3, "traceIdHigh"),
        (4, "spanId"),
    ];
    read_struct(p, &required, |p, t, id| {
        match (id, t) {
            (1, TType::I32) => {
                reference.ref_type = p.read_i32().map_err(|e| e.within("refType"))?;
            }
            (2, TType::I64) => {
                reference.trace_id_low = p.read_i64().map_err(|e| e.within("traceIdLow"))? as u64;
            }
            (3, TType::I64) => {
                reference.trace_id_high = p.read_i64().map_err(|e| e.within("traceIdHigh"))? as u64;
            }
            (4, TType::I64) => {
                reference.span_id = p.read_i64().map_err(|e| e.within("spanId"))? as u64;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(reference)
}

fn read_span<'a, P: Protocol<'a>>(p: &mut P) -> Result<Span> {
    let mut span = Span::default();
    let (mut start_micros, mut duration_micros) = (0_i64, 0_i64);
    let required = [
        (1, "traceIdLow"),
        (2, "traceIdHigh"),
        (3, "spanId"),
        (4, "parentSpanId"),
        (5, "operationName"),
        (7, "flags"),
        (8, "startTime"),
        (9, "duration"),
    ];
    read_struct(p, &required, |p, t, id| {
        let i64_field = |p: &mut P, name: &str| p.read_i64().map_err(|e| e.within(name));
        match (id, t) {
            (1, TType::I64) => span.trace_id_low = i64_field(p, "traceIdLow")? as u64,
            (2, TType::I64) => span.trace_id_high = i64_field(p, "traceIdHigh")? as u64,
            (3, TType::I64) => span.span_id = i64_field(p, "spanId")? as u64,
            (4, TType::I64) => span.parent_span_id = i64_field(p, "parentSpanId")? as u64,
            (5, TType::String) => {
                span.operation_name = p.read_string().map_err(|e| e.within("operationName"))?;
            }
            (6, TType::List) => span.references = read_list(p, "references", read_span_ref)?,
            (7, TType::I32) => {
                p.read_i32().map_err(|e| e.within("flags"))?;
            }
            (8, TType::I64) => start_micros = i64_field(p, "startTime")?,
            (9, TType::I64) => duration_micros = i64_field(p, "duration")?,
            (10, TType::List) => span.tags = read_list(p, "tags", read_tag)?,
            (11, TType::List) => span.logs = read_list(p, "logs", read_log)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    // contrib: start µs × 1000 and (start + duration) µs × 1000, in Go's wrapping uint64.
    span.start_unix_nano = micros_to_nanos(start_micros);
    span.end_unix_nano = micros_to_nanos(start_micros.wrapping_add(duration_micros));
    Ok(span)
}

fn micros_to_nanos(micros: i64) -> u64 {
    (micros as u64).wrapping_mul(1_000)
}

/// An encoder for hand-built payloads in tests.
#[cfg(any(test, feature = "test-util"))]
pub mod encode;
