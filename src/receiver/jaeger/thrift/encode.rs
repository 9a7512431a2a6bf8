//! A minimal Thrift encoder for tests: enough of both protocols to write the Jaeger IDL
//! and arbitrary extra fields.

use super::super::{Batch, Log, Process, Span, SpanRef, Tag, TagValue};
use super::ThriftProtocol;

/// Protocol-neutral type names for the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Bool,
    Byte,
    Double,
    I16,
    I32,
    I64,
    String,
    Struct,
    Map,
    List,
}

impl Ty {
    fn binary(self) -> u8 {
        match self {
            Ty::Bool => 2,
            Ty::Byte => 3,
            Ty::Double => 4,
            Ty::I16 => 6,
            Ty::I32 => 8,
            Ty::I64 => 10,
            Ty::String => 11,
            Ty::Struct => 12,
            Ty::Map => 13,
            Ty::List => 15,
        }
    }

    fn compact(self) -> u8 {
        match self {
            Ty::Bool => 1,
            Ty::Byte => 3,
            Ty::I16 => 4,
            Ty::I32 => 5,
            Ty::I64 => 6,
            Ty::Double => 7,
            Ty::String => 8,
            Ty::List => 9,
            Ty::Map => 11,
            Ty::Struct => 12,
        }
    }
}

#[derive(Debug)]
pub struct Writer {
    pub protocol: ThriftProtocol,
    pub bytes: Vec<u8>,
    last_field: i16,
    enclosing: Vec<i16>,
}

impl Writer {
    pub fn new(protocol: ThriftProtocol) -> Writer {
        Writer {
            protocol,
            bytes: Vec::new(),
            last_field: 0,
            enclosing: Vec::new(),
        }
    }

    fn varint(&mut self, mut value: u64) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                self.bytes.push(byte);
                return;
            }
            self.bytes.push(byte | 0x80);
        }
    }

    fn zigzag(&mut self, value: i64) {
        self.varint(((value << 1) ^ (value >> 63)) as u64);
    }

    pub fn struct_begin(&mut self) {
        self.enclosing.push(self.last_field);
        self.last_field = 0;
    }

    pub fn struct_end(&mut self) {
        self.bytes.push(0);
        self.last_field = self.enclosing.pop().unwrap_or(0);
    }

    /// A field header; for a compact bool use [`Writer::bool_field`].
    pub fn field(&mut self, ty: Ty, id: i16) {
        self.field_with_type(ty, ty.compact(), id);
    }

    fn field_with_type(&mut self, ty: Ty, compact_type: u8, id: i16) {
        match self.protocol {
            ThriftProtocol::Binary => {
                self.bytes.push(ty.binary());
                self.bytes.extend_from_slice(&id.to_be_bytes());
            }
            ThriftProtocol::Compact => {
                let delta = id - self.last_field;
                if (1..=15).contains(&delta) {
                    self.bytes.push(((delta as u8) << 4) | compact_type);
                } else {
                    self.bytes.push(compact_type);
                    self.zigzag(i64::from(id));
                }
                self.last_field = id;
            }
        }
    }

    pub fn bool_field(&mut self, id: i16, value: bool) {
        match self.protocol {
            ThriftProtocol::Binary => {
                self.field(Ty::Bool, id);
                self.bytes.push(u8::from(value));
            }
            ThriftProtocol::Compact => {
                self.field_with_type(Ty::Bool, if value { 1 } else { 2 }, id);
            }
        }
    }

    pub fn i32(&mut self, value: i32) {
        match self.protocol {
            ThriftProtocol::Binary => self.bytes.extend_from_slice(&value.to_be_bytes()),
            ThriftProtocol::Compact => self.zigzag(i64::from(value)),
        }
    }

    pub fn i64(&mut self, value: i64) {
        match self.protocol {
            ThriftProtocol::Binary => self.bytes.extend_from_slice(&value.to_be_bytes()),
            ThriftProtocol::Compact => self.zigzag(value),
        }
    }

    pub fn double(&mut self, value: f64) {
        match self.protocol {
            ThriftProtocol::Binary => self.bytes.extend_from_slice(&value.to_bits().to_be_bytes()),
            ThriftProtocol::Compact => self.bytes.extend_from_slice(&value.to_bits().to_le_bytes()),
        }
    }

    pub fn binary(&mut self, value: &[u8]) {
        match self.protocol {
            ThriftProtocol::Binary => {
                self.bytes
                    .extend_from_slice(&(value.len() as i32).to_be_bytes());
            }
            ThriftProtocol::Compact => self.varint(value.len() as u64),
        }
        self.bytes.extend_from_slice(value);
    }

    pub fn list_begin(&mut self, element: Ty, count: usize) {
        match self.protocol {
            ThriftProtocol::Binary => {
                self.bytes.push(element.binary());
                self.bytes.extend_from_slice(&(count as i32).to_be_bytes());
            }
            ThriftProtocol::Compact => {
                if count < 15 {
                    self.bytes.push(((count as u8) << 4) | element.compact());
                } else {
                    self.bytes.push(0xf0 | element.compact());
                    self.varint(count as u64);
                }
            }
        }
    }

    pub fn map_begin(&mut self, key: Ty, value: Ty, count: usize) {
        match self.protocol {
            ThriftProtocol::Binary => {
                self.bytes.push(key.binary());
                self.bytes.push(value.binary());
                self.bytes.extend_from_slice(&(count as i32).to_be_bytes());
            }
            ThriftProtocol::Compact => {
                self.varint(count as u64);
                if count > 0 {
                    self.bytes.push((key.compact() << 4) | value.compact());
                }
            }
        }
    }

    /// A strict message header (`oneway` call).
    pub fn message_begin(&mut self, name: &str) {
        match self.protocol {
            ThriftProtocol::Binary => {
                self.bytes
                    .extend_from_slice(&(0x8001_0004_u32 as i32).to_be_bytes());
                self.binary(name.as_bytes());
                self.i32(7);
            }
            ThriftProtocol::Compact => {
                self.bytes.push(0x82);
                self.bytes.push((4 << 5) | 1);
                self.varint(7);
                self.binary(name.as_bytes());
            }
        }
    }

    pub fn batch(&mut self, batch: &Batch) {
        self.struct_begin();
        if let Some(process) = &batch.process {
            self.field(Ty::Struct, 1);
            self.process(process);
        }
        self.field(Ty::List, 2);
        self.list_begin(Ty::Struct, batch.spans.len());
        for span in &batch.spans {
            self.span(span);
        }
        self.struct_end();
    }

    fn process(&mut self, process: &Process) {
        self.struct_begin();
        self.field(Ty::String, 1);
        self.binary(process.service_name.as_bytes());
        self.tags(2, &process.tags);
        self.struct_end();
    }

    fn tags(&mut self, id: i16, tags: &[Tag]) {
        self.field(Ty::List, id);
        self.list_begin(Ty::Struct, tags.len());
        for tag in tags {
            self.tag(tag);
        }
    }

    pub fn tag(&mut self, tag: &Tag) {
        self.struct_begin();
        self.field(Ty::String, 1);
        self.binary(tag.key.as_bytes());
        self.field(Ty::I32, 2);
        match &tag.value {
            TagValue::Str(text) => {
                self.i32(0);
                self.field(Ty::String, 3);
                self.binary(text.as_bytes());
            }
            TagValue::Double(number) => {
                self.i32(1);
                self.field(Ty::Double, 4);
                self.double(*number);
            }
            TagValue::Bool(flag) => {
                self.i32(2);
                self.bool_field(5, *flag);
            }
            TagValue::Long(number) => {
                self.i32(3);
                self.field(Ty::I64, 6);
                self.i64(*number);
            }
            TagValue::Binary(bytes) => {
                self.i32(4);
                self.field(Ty::String, 7);
                self.binary(bytes);
            }
            TagValue::Unknown(_) => self.i32(9),
        }
        self.struct_end();
    }

    fn span(&mut self, span: &Span) {
        self.struct_begin();
        for (id, value) in [
            (1, span.trace_id_low as i64),
            (2, span.trace_id_high as i64),
            (3, span.span_id as i64),
            (4, span.parent_span_id as i64),
        ] {
            self.field(Ty::I64, id);
            self.i64(value);
        }
        self.field(Ty::String, 5);
        self.binary(span.operation_name.as_bytes());
        if !span.references.is_empty() {
            self.field(Ty::List, 6);
            self.list_begin(Ty::Struct, span.references.len());
            for reference in &span.references {
                self.span_ref(reference);
            }
        }
        self.field(Ty::I32, 7);
        self.i32(1);
        let start = (span.start_unix_nano / 1_000) as i64;
        let end = (span.end_unix_nano / 1_000) as i64;
        self.field(Ty::I64, 8);
        self.i64(start);
        self.field(Ty::I64, 9);
        self.i64(end - start);
        if !span.tags.is_empty() {
            self.tags(10, &span.tags);
        }
        if !span.logs.is_empty() {
            self.field(Ty::List, 11);
            self.list_begin(Ty::Struct, span.logs.len());
            for log in &span.logs {
                self.log(log);
            }
        }
        self.struct_end();
    }

    fn span_ref(&mut self, reference: &SpanRef) {
        self.struct_begin();
        self.field(Ty::I32, 1);
        self.i32(reference.ref_type);
        for (id, value) in [
            (2, reference.trace_id_low as i64),
            (3, reference.trace_id_high as i64),
            (4, reference.span_id as i64),
        ] {
            self.field(Ty::I64, id);
            self.i64(value);
        }
        self.struct_end();
    }

    fn log(&mut self, log: &Log) {
        self.struct_begin();
        self.field(Ty::I64, 1);
        self.i64((log.time_unix_nano / 1_000) as i64);
        self.tags(2, &log.fields);
        self.struct_end();
    }
}

/// `batch` as a bare struct (the `thrift_http` body).
pub fn encode_batch(batch: &Batch, protocol: ThriftProtocol) -> Vec<u8> {
    let mut writer = Writer::new(protocol);
    writer.batch(batch);
    writer.bytes
}

/// `batch` as an `Agent.emitBatch` message (a UDP datagram).
pub fn encode_emit_batch(batch: &Batch, protocol: ThriftProtocol) -> Vec<u8> {
    let mut writer = Writer::new(protocol);
    writer.message_begin("emitBatch");
    writer.struct_begin();
    writer.field(Ty::Struct, 1);
    writer.batch(batch);
    writer.struct_end();
    writer.bytes
}
