//! The pprof format: a gzipped protobuf `perftools.profiles.Profile`
//! (github.com/google/pprof, proto/profile.proto), written as Go writes a heap profile
//! (`writeHeapProto` in runtime/pprof/protomem.go), but for two things pprof needs of Lua
//! frames: one mapping, marked symbolized, stands for the state (Go lists the binaries), and
//! functions have no system name (see `Builder::function`). Only the messages and fields used
//! are declared; the tags are those of profile.proto.

use std::collections::HashMap;
use std::io::{self, Write};

use flate2::{Compression, write::GzEncoder};
use prost::Message;

use super::{Frame, HeapProfile, View};

#[derive(Clone, PartialEq, Message)]
struct Profile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    time_nanos: i64,
    #[prost(int64, tag = "10")]
    duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    period: i64,
    #[prost(int64, repeated, tag = "13")]
    comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    default_sample_type: i64,
}

#[derive(Clone, PartialEq, Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(int64, tag = "1")]
    key: i64,
    #[prost(int64, tag = "2")]
    str: i64,
    #[prost(int64, tag = "3")]
    num: i64,
}

/// The one mapping, the Lua state; symbolized already, so pprof looks for no binary.
#[derive(Clone, PartialEq, Message)]
struct Mapping {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(bool, tag = "7")]
    has_functions: bool,
    #[prost(bool, tag = "8")]
    has_filenames: bool,
    #[prost(bool, tag = "9")]
    has_line_numbers: bool,
}

#[derive(Clone, PartialEq, Message)]
struct Location {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(uint64, tag = "2")]
    mapping_id: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    function_id: u64,
    #[prost(int64, tag = "2")]
    line: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Function {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
    #[prost(int64, tag = "3")]
    system_name: i64,
    #[prost(int64, tag = "4")]
    filename: i64,
    #[prost(int64, tag = "5")]
    start_line: i64,
}

const MAPPING_ID: u64 = 1;

pub(super) fn write(profile: &HeapProfile, out: impl Write) -> io::Result<()> {
    let mut gzip = GzEncoder::new(out, Compression::default());
    gzip.write_all(&Builder::default().build(profile).encode_to_vec())?;
    gzip.finish()?.flush()
}

/// Interns strings, frames and functions as a profile is built; ids and indices follow first
/// use, so equal profiles encode equally.
#[derive(Default)]
struct Builder<'a> {
    strings: HashMap<&'a str, i64>,
    locations: HashMap<&'a Frame, u64>,
    functions: HashMap<(&'a str, &'a str), u64>,
    profile: Profile,
}

impl<'a> Builder<'a> {
    fn build(mut self, heap: &'a HeapProfile) -> Profile {
        self.string(""); // index 0, as the format requires
        let space = self.value_type("space", "bytes");
        self.profile.period_type = Some(space);
        self.profile.period = i64::try_from(heap.rate).unwrap_or(i64::MAX);
        self.profile.sample_type =
            View::ALL.iter().map(|view| self.value_type(view.name(), pprof_unit(*view))).collect();
        self.profile.default_sample_type = self.string(View::InuseSpace.name());
        self.profile.mapping =
            vec![Mapping { id: MAPPING_ID, has_functions: true, has_filenames: true, has_line_numbers: true }];
        self.profile.time_nanos = heap.time_nanos;
        self.profile.duration_nanos = heap.duration_nanos;
        self.profile.comment = heap.comments.iter().map(|line| self.string(line)).collect();
        for sample in &heap.samples {
            let scaled = heap.scaled(sample);
            let location_id = sample.stack.iter().map(|frame| self.location(frame)).collect();
            let mut label = vec![Label { key: self.string("object"), str: self.string(sample.object_type), num: 0 }];
            // Go's label: the mean size of the sampled objects, when known.
            let block_size = sample.alloc_bytes.checked_div(sample.alloc_objects).unwrap_or(0);
            if block_size != 0 {
                let num = i64::try_from(block_size).unwrap_or(i64::MAX);
                label.push(Label { key: self.string("bytes"), str: 0, num });
            }
            for (key, value) in &sample.labels {
                label.push(Label { key: self.string(key), str: self.string(value), num: 0 });
            }
            let value = View::ALL.iter().map(|view| scaled.get(*view)).collect();
            self.profile.sample.push(Sample { location_id, value, label });
        }
        self.profile
    }

    fn string(&mut self, text: &'a str) -> i64 {
        let table = &mut self.profile.string_table;
        *self.strings.entry(text).or_insert_with(|| {
            table.push(text.to_owned());
            table.len() as i64 - 1
        })
    }

    fn value_type(&mut self, r#type: &'a str, unit: &'a str) -> ValueType {
        ValueType { r#type: self.string(r#type), unit: self.string(unit) }
    }

    fn location(&mut self, frame: &'a Frame) -> u64 {
        if let Some(&id) = self.locations.get(frame) {
            return id;
        }
        let function_id = self.function(&frame.function, &frame.file);
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            mapping_id: MAPPING_ID,
            line: vec![Line { function_id, line: frame.line }],
        });
        self.locations.insert(frame, id);
        id
    }

    fn function(&mut self, name: &'a str, file: &'a str) -> u64 {
        if let Some(&id) = self.functions.get(&(name, file)) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let (name_index, filename) = (self.string(name), self.string(file));
        // No system name (Go repeats the name): pprof would take "function <file.lua:12>" for a
        // C++ template and cut it to "function ".
        let function = Function { id, name: name_index, system_name: 0, filename, start_line: 0 };
        self.profile.function.push(function);
        self.functions.insert((name, file), id);
        id
    }
}

/// The unit of a sample type as Go names it.
fn pprof_unit(view: View) -> &'static str {
    match view {
        View::InuseSpace | View::AllocSpace => "bytes",
        View::InuseObjects | View::AllocObjects => "count",
    }
}
