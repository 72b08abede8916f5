//! A restricted pickle reader and a small pickle writer: exactly what `torch.save` writes for
//! a `state_dict()` of plain values and tensors, and nothing that can run code.
//!
//! # Reading
//!
//! The reader is a pickle virtual machine over a closed set of values ([`Value`]): `None`,
//! booleans, integers, floats, strings, bytes, tuples, lists, dicts, and three kinds of
//! objects that `torch.save` needs: the tensor-rebuild function
//! `torch._utils._rebuild_tensor_v2`, the storage types (`torch.FloatStorage`, ...) named in
//! persistent ids, and `collections.OrderedDict` (an empty one is the `backward_hooks`
//! argument of every tensor). A `GLOBAL` naming anything else (`os.system`,
//! `builtins.eval`, ...) is rejected when it is read, before any `REDUCE` could call it, and
//! the opcodes that build arbitrary objects (`INST`, `OBJ`, `NEWOBJ`, extension codes) are
//! rejected too (`BUILD` only sets a dict's attributes, which are dropped). Nothing is ever executed: a `REDUCE` of an allowed global only
//! builds a [`Value`]. The reader reads protocols 2 to 5 (`torch.save` writes protocol 2).
//!
//! Sizes are bounded by the input: every length is checked against the bytes left, and the
//! memo and stack only hold values already read.
//!
//! # Writing
//!
//! [`write`] writes protocol 2 with the opcodes torch itself uses (`BINUNICODE`, `BININT*`,
//! `BINFLOAT`, `GLOBAL`, `BINPERSID`, `REDUCE`, `SETITEMS`, `APPENDS`, tuples), which
//! `torch.load(weights_only=True)` accepts.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Element type of a torch storage, named by its storage class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StorageType {
    Float,
    Double,
    Half,
    BFloat16,
    Long,
    Int,
    Short,
    Char,
    Byte,
    Bool,
}

impl StorageType {
    const ALL: [(&'static str, StorageType); 10] = [
        ("FloatStorage", StorageType::Float),
        ("DoubleStorage", StorageType::Double),
        ("HalfStorage", StorageType::Half),
        ("BFloat16Storage", StorageType::BFloat16),
        ("LongStorage", StorageType::Long),
        ("IntStorage", StorageType::Int),
        ("ShortStorage", StorageType::Short),
        ("CharStorage", StorageType::Char),
        ("ByteStorage", StorageType::Byte),
        ("BoolStorage", StorageType::Bool),
    ];

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    /// The class name (`FloatStorage`).
    pub(crate) fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        match self {
            StorageType::Double | StorageType::Long => 8,
            StorageType::Float | StorageType::Int => 4,
            StorageType::Half | StorageType::BFloat16 | StorageType::Short => 2,
            StorageType::Char | StorageType::Byte | StorageType::Bool => 1,
        }
    }
}

/// The callables and classes a pickle may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildTensorV2,
    /// `collections.OrderedDict`.
    OrderedDict,
    /// A storage class, `torch.FloatStorage` and the like.
    Storage(StorageType),
}

impl Global {
    fn resolve(module: &str, name: &str) -> Result<Self> {
        match (module, name) {
            ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensorV2),
            ("collections", "OrderedDict") => Ok(Global::OrderedDict),
            ("torch", storage) if StorageType::from_name(storage).is_some() => Ok(Global::Storage(
                StorageType::from_name(storage).expect("checked"),
            )),
            _ => Err(Error::forbidden(format!(
                "the pickle names '{module}.{name}', which is not one of the tensor-rebuild \
                 functions (torch._utils._rebuild_tensor_v2, torch.*Storage, \
                 collections.OrderedDict); nothing was executed"
            ))),
        }
    }
}

/// A storage named by a persistent id: `('storage', torch.FloatStorage, key, location, numel)`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StorageRef {
    pub ty: StorageType,
    /// The record name under `data/` in the archive.
    pub key: String,
    /// Where the storage lived when saved (`cpu`, `cuda:0`); its bytes are in the file either way.
    pub location: String,
    /// Elements in the storage.
    pub numel: u64,
}

/// A tensor: a view of a storage.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    /// Offset of the first element, in elements.
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

/// A value of the closed set the reader builds and the writer writes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Entries in insertion order (keys may be ints, as in `state`).
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Value {
    /// A short description for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => if *b { "True" } else { "False" }.into(),
            Value::Int(i) => i.to_string(),
            Value::Float(x) => format!("{x:?}"),
            Value::Str(s) => format!("'{s}'"),
            Value::Bytes(b) => format!("{} bytes", b.len()),
            Value::Tuple(v) => format!("a tuple of {}", v.len()),
            Value::List(v) => format!("a list of {}", v.len()),
            Value::Dict(v) => format!("a dict of {}", v.len()),
            Value::Global(g) => format!("{g:?}"),
            Value::Storage(_) => "a storage".into(),
            Value::Tensor(t) => format!("a tensor of shape {:?}", t.shape),
        }
    }

    /// Number of nodes in the value (for the copy budget of memo reads).
    fn weight(&self) -> usize {
        1 + match self {
            Value::Tuple(v) | Value::List(v) => v.iter().map(Value::weight).sum(),
            Value::Dict(v) => v.iter().map(|(k, x)| k.weight() + x.weight()).sum(),
            Value::Tensor(t) => t.shape.len() + t.stride.len(),
            _ => 0,
        }
    }

    /// The value under string key `key` of a dict.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Reads one pickle (up to `STOP`) and returns its value.
pub(crate) fn read(data: &[u8]) -> Result<Value> {
    Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        budget: data.len().saturating_mul(16).saturating_add(4096),
    }
    .run()
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Value nodes that memo reads and `DUP` may still copy: a pickle that reads a memoized
    /// value into itself over and over (doubling its size each time) is an error, not an
    /// exhausted memory.
    budget: usize,
}

fn truncated() -> Error {
    Error::format("data.pkl ends in the middle of an instruction (truncated file?)")
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let bytes = self.data.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len(&mut self, n: u64) -> Result<usize> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.data.len() - self.pos)
            .ok_or_else(truncated)
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(truncated)?;
        let s = std::str::from_utf8(&rest[..end])
            .map_err(|_| Error::format("a GLOBAL name is not UTF-8"))?
            .to_string();
        self.pos += end + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<Value> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| Error::format("a string is not UTF-8"))?;
        Ok(Value::Str(s.to_string()))
    }

    fn pop(&mut self) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(Error::format("the pickle pops from an empty stack"));
        }
        Ok(self.stack.pop().expect("checked"))
    }

    fn top(&mut self) -> Result<&mut Value> {
        self.stack
            .last_mut()
            .ok_or_else(|| Error::format("the pickle uses an empty stack"))
    }

    /// The items above the last mark, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| Error::format("the pickle closes a MARK it never opened"))?;
        Ok(self.stack.split_off(mark))
    }

    /// Charges `value`'s size to the copy budget.
    fn spend(&mut self, value: &Value) -> Result<()> {
        let w = value.weight();
        self.budget = self.budget.checked_sub(w).ok_or_else(|| {
            Error::format(
                "the pickle copies memoized values into much more data than the file holds \
                 (a decompression bomb?)",
            )
        })?;
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<Value> {
        let v =
            self.memo.get(&key).cloned().ok_or_else(|| {
                Error::format(format!("the pickle reads memo {key}, never stored"))
            })?;
        self.spend(&v)?;
        Ok(v)
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        let v = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| Error::format("the pickle memoizes an empty stack"))?;
        self.memo.insert(key, v);
        Ok(())
    }

    fn run(mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if !(2..=5).contains(&proto) {
                        return Err(Error::format(format!(
                            "pickle protocol {proto}, this reader reads protocols 2 to 5"
                        )));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(pairs(items)?));
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let k = self.u32()?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'X' => {
                    let n = self.u32()? as u64;
                    let n = self.len(n)?;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.u64()?;
                    let n = self.len(n)?;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'B' => self.u32()? as u64,
                        b'C' => self.u8()? as u64,
                        _ => self.u64()?,
                    };
                    let n = self.len(n)?;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let b = self.take(2)?;
                    let v = u16::from_le_bytes([b[0], b[1]]);
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(Error::unsupported(format!(
                            "an integer of {n} bytes does not fit in 64 bits"
                        )));
                    }
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= (byte as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)));
                }
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'N' => self.stack.push(Value::None),
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = Global::resolve(&module, &name)?;
                    self.stack.push(Value::Global(g));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(Error::format("STACK_GLOBAL of a non-string"));
                    };
                    let g = Global::resolve(&module, &name)?;
                    self.stack.push(Value::Global(g));
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args)?;
                    self.stack.push(v);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(persistent_load(pid)?);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        other => {
                            return Err(Error::format(format!(
                                "SETITEM on {}, not a dict",
                                other.describe()
                            )))
                        }
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let items = pairs(items)?;
                    match self.top()? {
                        Value::Dict(d) => d.extend(items),
                        other => {
                            return Err(Error::format(format!(
                                "SETITEMS on {}, not a dict",
                                other.describe()
                            )))
                        }
                    }
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        other => {
                            return Err(Error::format(format!(
                                "APPEND on {}, not a list",
                                other.describe()
                            )))
                        }
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        other => {
                            return Err(Error::format(format!(
                                "APPENDS on {}, not a list",
                                other.describe()
                            )))
                        }
                    }
                }
                b'b' => {
                    // BUILD: `obj.__setstate__(state)`. Allowed only on a dict (torch's
                    // module state_dicts set `_metadata` on their OrderedDict this way); the
                    // attributes are dropped, nothing is called.
                    let _state = self.pop()?;
                    match self.top()? {
                        Value::Dict(_) => {}
                        other => {
                            return Err(Error::forbidden(format!(
                                "BUILD on {}: only a dict's attributes may be set; nothing was \
                                 executed",
                                other.describe()
                            )))
                        }
                    }
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.spend(&v)?;
                    self.stack.push(v);
                }
                other => {
                    return Err(Error::forbidden(format!(
                        "the pickle uses opcode {} (0x{other:02x}) at byte {}, which this \
                         reader does not allow (it builds arbitrary objects or is not part of \
                         what torch.save writes); nothing was executed",
                        opcode_name(other),
                        self.pos - 1
                    )))
                }
            }
        }
    }
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b'b' => "BUILD",
        0x82..=0x84 => "EXT",
        b'P' => "PERSID",
        b'I' => "INT",
        b'L' => "LONG",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'F' => "FLOAT",
        b'g' => "GET",
        b'p' => "PUT",
        _ => "unknown",
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return Err(Error::format("a dict with an odd number of items"));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn int_of(v: &Value, what: &str) -> Result<u64> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as u64),
        other => Err(Error::format(format!(
            "{what} must be an integer >= 0, got {}",
            other.describe()
        ))),
    }
}

fn ints_of(v: &Value, what: &str) -> Result<Vec<u64>> {
    match v {
        Value::Tuple(items) => items.iter().map(|i| int_of(i, what)).collect(),
        other => Err(Error::format(format!(
            "{what} must be a tuple of integers, got {}",
            other.describe()
        ))),
    }
}

/// `REDUCE`: builds the value of an allowed call; calls nothing.
fn reduce(callable: Value, args: Value) -> Result<Value> {
    let Value::Tuple(args) = args else {
        return Err(Error::format(format!(
            "REDUCE arguments must be a tuple, got {}",
            args.describe()
        )));
    };
    match callable {
        Value::Global(Global::RebuildTensorV2) => {
            if !(6..=7).contains(&args.len()) {
                return Err(Error::format(format!(
                    "_rebuild_tensor_v2 takes 6 or 7 arguments, got {}",
                    args.len()
                )));
            }
            let Value::Storage(storage) = args[0].clone() else {
                return Err(Error::format(format!(
                    "_rebuild_tensor_v2's first argument must be a storage, got {}",
                    args[0].describe()
                )));
            };
            let offset = int_of(&args[1], "a tensor's storage offset")?;
            let shape = ints_of(&args[2], "a tensor's size")?;
            let stride = ints_of(&args[3], "a tensor's stride")?;
            if shape.len() != stride.len() {
                return Err(Error::format(format!(
                    "a tensor has size {shape:?} but stride {stride:?}"
                )));
            }
            Ok(Value::Tensor(TensorRef {
                storage,
                offset,
                shape,
                stride,
            }))
        }
        Value::Global(Global::OrderedDict) => match args.as_slice() {
            [] => Ok(Value::Dict(Vec::new())),
            [Value::List(items)] => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::Tuple(kv) if kv.len() == 2 => {
                            out.push((kv[0].clone(), kv[1].clone()))
                        }
                        other => {
                            return Err(Error::format(format!(
                                "OrderedDict of {}, not (key, value) pairs",
                                other.describe()
                            )))
                        }
                    }
                }
                Ok(Value::Dict(out))
            }
            _ => Err(Error::format(
                "OrderedDict called with unexpected arguments",
            )),
        },
        other => Err(Error::forbidden(format!(
            "REDUCE calls {}, which is not a tensor-rebuild function; nothing was executed",
            other.describe()
        ))),
    }
}

/// `BINPERSID`: a storage reference `('storage', torch.FloatStorage, key, location, numel)`.
fn persistent_load(pid: Value) -> Result<Value> {
    let bad = |why: &str| Error::format(format!("a persistent id {why}"));
    let Value::Tuple(items) = pid else {
        return Err(bad("is not a tuple"));
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(Global::Storage(ty)), Value::Str(key), Value::Str(location), numel]
            if tag == "storage" =>
        {
            Ok(Value::Storage(StorageRef {
                ty: *ty,
                key: key.clone(),
                location: location.clone(),
                numel: int_of(numel, "a storage's size")?,
            }))
        }
        _ => Err(bad(
            "is not ('storage', torch.<Type>Storage, key, location, numel)",
        )),
    }
}

/// Writes `value` as a protocol-2 pickle. Tensors are written as `_rebuild_tensor_v2` calls
/// on `FloatStorage` persistent ids (their `storage.key` names the record).
pub(crate) fn write(value: &Value) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    emit(&mut out, value);
    out.push(b'.');
    out
}

fn emit_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn emit_int(out: &mut Vec<u8>, i: i64) {
    if (0..=0xff).contains(&i) {
        out.extend_from_slice(&[b'K', i as u8]);
    } else if (0..=0xffff).contains(&i) {
        out.push(b'M');
        out.extend_from_slice(&(i as u16).to_le_bytes());
    } else if i32::try_from(i).is_ok() {
        out.push(b'J');
        out.extend_from_slice(&(i as i32).to_le_bytes());
    } else {
        out.extend_from_slice(&[0x8a, 8]);
        out.extend_from_slice(&i.to_le_bytes());
    }
}

fn emit_global(out: &mut Vec<u8>, module: &str, name: &str) {
    out.push(b'c');
    out.extend_from_slice(module.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
}

fn emit_tuple(out: &mut Vec<u8>, items: &[Value]) {
    match items.len() {
        0 => out.push(b')'),
        1..=3 => {
            for v in items {
                emit(out, v);
            }
            out.push(0x84 + items.len() as u8);
        }
        _ => {
            out.push(b'(');
            for v in items {
                emit(out, v);
            }
            out.push(b't');
        }
    }
}

fn emit(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::None => out.push(b'N'),
        Value::Bool(b) => out.push(if *b { 0x88 } else { 0x89 }),
        Value::Int(i) => emit_int(out, *i),
        Value::Float(x) => {
            out.push(b'G');
            out.extend_from_slice(&x.to_be_bytes());
        }
        Value::Str(s) => emit_str(out, s),
        Value::Bytes(b) => {
            out.push(b'B');
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        Value::Tuple(items) => emit_tuple(out, items),
        Value::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                for v in items {
                    emit(out, v);
                }
                out.push(b'e');
            }
        }
        Value::Dict(entries) => {
            out.push(b'}');
            if !entries.is_empty() {
                out.push(b'(');
                for (k, v) in entries {
                    emit(out, k);
                    emit(out, v);
                }
                out.push(b'u');
            }
        }
        Value::Global(g) => match g {
            Global::RebuildTensorV2 => emit_global(out, "torch._utils", "_rebuild_tensor_v2"),
            Global::OrderedDict => emit_global(out, "collections", "OrderedDict"),
            Global::Storage(t) => emit_global(out, "torch", t.name()),
        },
        Value::Storage(s) => {
            out.push(b'(');
            emit_str(out, "storage");
            emit_global(out, "torch", s.ty.name());
            emit_str(out, &s.key);
            emit_str(out, &s.location);
            emit_int(out, s.numel as i64);
            out.push(b't');
            out.push(b'Q');
        }
        Value::Tensor(t) => {
            emit_global(out, "torch._utils", "_rebuild_tensor_v2");
            out.push(b'(');
            emit(out, &Value::Storage(t.storage.clone()));
            emit_int(out, t.offset as i64);
            let ints = |v: &[u64]| v.iter().map(|&i| Value::Int(i as i64)).collect::<Vec<_>>();
            emit_tuple(out, &ints(&t.shape));
            emit_tuple(out, &ints(&t.stride));
            out.push(0x89); // requires_grad
            emit_global(out, "collections", "OrderedDict");
            out.push(b')');
            out.push(b'R'); // backward_hooks = OrderedDict()
            out.push(b't');
            out.push(b'R');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(key: &str, shape: &[u64]) -> Value {
        let numel = shape.iter().product::<u64>();
        let mut stride = vec![1u64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * shape[i + 1];
        }
        Value::Tensor(TensorRef {
            storage: StorageRef {
                ty: StorageType::Float,
                key: key.into(),
                location: "cpu".into(),
                numel,
            },
            offset: 0,
            shape: shape.to_vec(),
            stride,
        })
    }

    #[test]
    fn written_values_read_back() {
        let v = Value::Dict(vec![
            (
                Value::Str("a".into()),
                Value::List(vec![
                    Value::Int(0),
                    Value::Int(300),
                    Value::Int(-5),
                    Value::Int(1 << 40),
                ]),
            ),
            (
                Value::Int(3),
                Value::Tuple(vec![Value::Float(0.9), Value::Float(1e-8)]),
            ),
            (Value::Str("t".into()), tensor("7", &[2, 3])),
            (Value::Str("s".into()), tensor("8", &[])),
            (
                Value::Str("f".into()),
                Value::Tuple(vec![
                    Value::Bool(true),
                    Value::None,
                    Value::Bool(false),
                    Value::Str("x".into()),
                ]),
            ),
        ]);
        assert_eq!(read(&write(&v)).unwrap(), v);
    }

    #[test]
    fn a_global_outside_the_allow_list_is_rejected_when_read() {
        // cos\nsystem\n(S'echo hi'\ntR.  (protocol 0 payload, as a classic exploit writes it)
        let evil = b"cos\nsystem\n(S'echo hi'\ntR.";
        let err = read(evil).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Forbidden);
        assert!(err.message().contains("os.system"), "{err}");
        let eval = b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1q\x00\x85R.";
        let err = read(eval).unwrap_err();
        assert!(err.message().contains("builtins.eval"), "{err}");
    }

    #[test]
    fn object_building_opcodes_are_rejected() {
        let err = read(b"\x80\x02)\x81.").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Forbidden);
        assert!(err.message().contains("NEWOBJ"), "{err}");
        let err = read(b"\x80\x02]}b.").unwrap_err();
        assert!(err.message().contains("BUILD on a list"), "{err}");
        assert_eq!(read(b"\x80\x02}}b.").unwrap(), Value::Dict(vec![]));
    }

    #[test]
    fn truncation_is_a_format_error() {
        let bytes = write(&Value::Str("hello".into()));
        for n in 0..bytes.len() {
            let err = read(&bytes[..n]).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Format, "{n}: {err}");
        }
    }

    #[test]
    fn a_pickle_that_doubles_a_memoized_value_runs_out_of_budget() {
        // [] memo0, then 40 times: get0 get0 TUPLE2 memo0 (each a copy of twice the last).
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..40 {
            p.extend_from_slice(&[b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        p.push(b'.');
        let err = read(&p).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Format);
        assert!(err.message().contains("bomb"), "{err}");
    }

    #[test]
    fn long1_reads_negative_and_large_integers() {
        assert_eq!(read(b"\x80\x02\x8a\x01\xff.").unwrap(), Value::Int(-1));
        assert_eq!(read(b"\x80\x02\x8a\x02\x00\x01.").unwrap(), Value::Int(256));
        assert_eq!(read(b"\x80\x02\x8a\x00.").unwrap(), Value::Int(0));
    }
}
