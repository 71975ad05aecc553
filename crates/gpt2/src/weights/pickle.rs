//! A pickle reader that builds data, never runs code. Python's unpickler imports whatever
//! module.name a GLOBAL opcode names and calls it on REDUCE, which is how a .bin file runs
//! `os.system`. Here a GLOBAL must be one of a few names a torch state dict uses, and each of
//! those is interpreted by this file (an OrderedDict is a list of pairs, `_rebuild_tensor_v2`
//! yields a tensor description); any other name is refused before anything else happens.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::StoredDType;

/// The names a state dict's pickle may use. Nothing here is executed; each is a tag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    RebuildFromTypeV2,
    /// `torch.FloatStorage` and friends: a storage's element type in a persistent id.
    Storage(StoredDType),
    /// `torch.Tensor`, `torch.nn.parameter.Parameter`: types named by `_rebuild_from_type_v2`.
    TensorType,
    /// `torch.device(...)`: where a storage lived when saved, which a CPU load ignores.
    Device,
}

impl Global {
    fn lookup(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
            ("torch._tensor", "_rebuild_from_type_v2") => Global::RebuildFromTypeV2,
            ("torch", "Tensor") | ("torch._tensor", "Tensor") => Global::TensorType,
            ("torch.nn.parameter", "Parameter") => Global::TensorType,
            ("torch", "device") => Global::Device,
            ("torch", storage) => Global::Storage(match storage {
                "DoubleStorage" => StoredDType::F64,
                "FloatStorage" => StoredDType::F32,
                "HalfStorage" => StoredDType::F16,
                "BFloat16Storage" => StoredDType::BF16,
                "LongStorage" => StoredDType::I64,
                "IntStorage" => StoredDType::I32,
                "ShortStorage" => StoredDType::I16,
                "CharStorage" => StoredDType::I8,
                "ByteStorage" => StoredDType::U8,
                "BoolStorage" => StoredDType::Bool,
                _ => return None,
            }),
            _ => return None,
        })
    }
}

/// A torch storage named by a persistent id: its bytes are another zip entry (or, in the
/// legacy format, follow the pickle).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageRef {
    pub(crate) key: String,
    pub(crate) dtype: StoredDType,
    /// In elements.
    pub(crate) numel: usize,
}

/// What `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)` describes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    pub(crate) storage: StorageRef,
    /// In elements.
    pub(crate) offset: usize,
    pub(crate) shape: Vec<usize>,
    pub(crate) strides: Vec<usize>,
}

/// Values are shared, never deep-copied: BINGET pushes the memoized object again, so a
/// hostile pickle that re-gets a value a million times costs a million pointer copies, not
/// a million copies of the value.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// A LONG too wide for i64, as its little-endian two's-complement bytes.
    BigInt(Rc<[u8]>),
    #[allow(dead_code)] // read by no state dict, but a pickle may hold one
    Float(f64),
    Str(Rc<str>),
    #[allow(dead_code)]
    Bytes(Rc<[u8]>),
    Tuple(Shared<Vec<Value>>),
    List(Shared<RefCell<Vec<Value>>>),
    /// Dicts keep insertion order, as Python's do.
    Dict(Shared<RefCell<Vec<(Value, Value)>>>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

/// A reference-counted container whose drop walks its contents with a worklist instead of
/// recursion, so a pickle nesting a million tuples cannot overflow the stack when freed.
#[derive(Debug, Default)]
pub(crate) struct Shared<T: Children>(Rc<T>);

impl<T: Children> Shared<T> {
    fn new(inner: T) -> Self {
        Shared(Rc::new(inner))
    }
}

impl<T: Children> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Rc::clone(&self.0))
    }
}

impl<T: Children> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

pub(crate) trait Children {
    /// Move the directly contained values out into `out`.
    fn take_children(&mut self, out: &mut Vec<Value>);
}

impl Children for Vec<Value> {
    fn take_children(&mut self, out: &mut Vec<Value>) {
        out.append(self);
    }
}

impl Children for RefCell<Vec<Value>> {
    fn take_children(&mut self, out: &mut Vec<Value>) {
        out.append(self.get_mut());
    }
}

impl Children for RefCell<Vec<(Value, Value)>> {
    fn take_children(&mut self, out: &mut Vec<Value>) {
        for (k, v) in self.get_mut().drain(..) {
            out.push(k);
            out.push(v);
        }
    }
}

fn take_children(v: &mut Value, out: &mut Vec<Value>) {
    match v {
        Value::Tuple(s) => {
            if let Some(inner) = Rc::get_mut(&mut s.0) {
                inner.take_children(out);
            }
        }
        Value::List(s) => {
            if let Some(inner) = Rc::get_mut(&mut s.0) {
                inner.take_children(out);
            }
        }
        Value::Dict(s) => {
            if let Some(inner) = Rc::get_mut(&mut s.0) {
                inner.take_children(out);
            }
        }
        _ => {}
    }
}

impl<T: Children> Drop for Shared<T> {
    fn drop(&mut self) {
        let Some(inner) = Rc::get_mut(&mut self.0) else {
            return; // still referenced elsewhere: nothing is freed yet
        };
        let mut pending = Vec::new();
        inner.take_children(&mut pending);
        while let Some(mut v) = pending.pop() {
            take_children(&mut v, &mut pending);
            // `v` now owns no children, so dropping it here does not recurse.
        }
    }
}

impl Value {
    fn describe(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    fn usize(&self, what: &str) -> Result<usize, String> {
        match self {
            Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} is negative: {i}")),
            other => Err(format!(
                "{what} should be an int, found {}",
                other.describe()
            )),
        }
    }

    fn usizes(&self, what: &str) -> Result<Vec<usize>, String> {
        match self {
            Value::Tuple(items) => items.iter().map(|v| v.usize(what)).collect(),
            Value::List(items) => items.borrow().iter().map(|v| v.usize(what)).collect(),
            other => Err(format!(
                "{what} should be a tuple, found {}",
                other.describe()
            )),
        }
    }
}

/// One pickle's result and where its STOP opcode ended (the legacy format puts several
/// pickles and raw storages back to back).
#[derive(Debug)]
pub(crate) struct Unpickled {
    pub(crate) value: Value,
    pub(crate) end: usize,
}

/// Read one pickle starting at `start`. Errors say what was refused or malformed, and where.
pub(crate) fn unpickle(bytes: &[u8], start: usize) -> Result<Unpickled, String> {
    let mut m = Machine {
        bytes,
        pos: start,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        let at = m.pos;
        let op = m.u8()?;
        match m.step(op) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(format!("pickle opcode 0x{op:02x} at byte {at}: {e}")),
        }
    }
    let value = m.pop()?;
    Ok(Unpickled { value, end: m.pos })
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or("truncated pickle (ended before STOP)")?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn len_u32(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.le()?) as usize)
    }

    fn len_u64(&mut self) -> Result<usize, String> {
        usize::try_from(u64::from_le_bytes(self.le()?)).map_err(|_| "length overflow".into())
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = self.bytes.get(self.pos..).unwrap_or(&[]);
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated pickle (line without newline)")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<String, String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in a string".into())
    }

    fn pop(&mut self) -> Result<Value, String> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err("stack underflow (popped past a MARK)".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "stack underflow".into())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or("no MARK on the stack")?;
        if mark > self.stack.len() {
            return Err("MARK above the stack".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&self, key: u64) -> Result<Value, String> {
        self.memo
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("memo key {key} was never stored"))
    }

    fn memo_put(&mut self, key: u64) -> Result<(), String> {
        let v = self.stack.last().ok_or("stack underflow")?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), String> {
        let g = Global::lookup(module, name).ok_or_else(|| {
            format!(
                "refused to load global `{module}.{name}`: only the torch tensor-rebuilding \
                 functions, storage types and collections.OrderedDict are allowed, so this \
                 file is either not a plain state dict or is trying to run code"
            )
        })?;
        self.stack.push(Value::Global(g));
        Ok(())
    }

    /// Returns true at STOP.
    fn step(&mut self, op: u8) -> Result<bool, String> {
        match op {
            b'.' => return Ok(true),
            0x80 => {
                let proto = self.u8()?;
                if proto > 5 {
                    return Err(format!("unsupported pickle protocol {proto}"));
                }
            }
            0x95 => {
                self.take(8)?; // FRAME: a length hint only
            }
            b'(' => self.marks.push(self.stack.len()),
            b'}' => self.stack.push(Value::Dict(Shared::default())),
            b']' => self.stack.push(Value::List(Shared::default())),
            b')' => self.stack.push(Value::Tuple(Shared::default())),
            0x8f => self.stack.push(Value::List(Shared::default())), // EMPTY_SET, as a list
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = pairs(items)?;
                self.stack
                    .push(Value::Dict(Shared::new(RefCell::new(pairs))));
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.stack
                    .push(Value::List(Shared::new(RefCell::new(items))));
            }
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Tuple(Shared::new(items)));
            }
            0x91 => {
                let items = self.pop_mark()?; // FROZENSET
                self.stack.push(Value::Tuple(Shared::new(items)));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < n
                    || self.marks.last().is_some_and(|&m| m > self.stack.len() - n)
                {
                    return Err("stack underflow".into());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.stack.push(Value::Tuple(Shared::new(items)));
            }
            b'q' => {
                let k = self.u8()? as u64;
                self.memo_put(k)?;
            }
            b'r' => {
                let k = u32::from_le_bytes(self.le()?) as u64;
                self.memo_put(k)?;
            }
            0x94 => {
                let k = self.memo.len() as u64;
                self.memo_put(k)?;
            }
            b'p' => {
                let k = self.line()?.trim().parse().map_err(|_| "bad PUT index")?;
                self.memo_put(k)?;
            }
            b'h' => {
                let k = self.u8()? as u64;
                let v = self.memo_get(k)?;
                self.stack.push(v);
            }
            b'j' => {
                let k = u32::from_le_bytes(self.le()?) as u64;
                let v = self.memo_get(k)?;
                self.stack.push(v);
            }
            b'g' => {
                let k = self.line()?.trim().parse().map_err(|_| "bad GET index")?;
                let v = self.memo_get(k)?;
                self.stack.push(v);
            }
            b'X' => {
                let n = self.len_u32()?;
                let s = self.string(n)?;
                self.stack.push(Value::Str(s.into()));
            }
            0x8c => {
                let n = self.u8()? as usize;
                let s = self.string(n)?;
                self.stack.push(Value::Str(s.into()));
            }
            0x8d => {
                let n = self.len_u64()?;
                let s = self.string(n)?;
                self.stack.push(Value::Str(s.into()));
            }
            b'U' | b'C' => {
                // SHORT_BINSTRING / SHORT_BINBYTES
                let n = self.u8()? as usize;
                let b = self.take(n)?.to_vec();
                self.stack.push(Value::Bytes(b.into()));
            }
            b'T' | b'B' => {
                let n = self.len_u32()?;
                let b = self.take(n)?.to_vec();
                self.stack.push(Value::Bytes(b.into()));
            }
            0x8e => {
                let n = self.len_u64()?;
                let b = self.take(n)?.to_vec();
                self.stack.push(Value::Bytes(b.into()));
            }
            b'J' => {
                let v = i32::from_le_bytes(self.le()?) as i64;
                self.stack.push(Value::Int(v));
            }
            b'K' => {
                let v = self.u8()? as i64;
                self.stack.push(Value::Int(v));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.le()?) as i64;
                self.stack.push(Value::Int(v));
            }
            0x8a => {
                let n = self.u8()? as usize;
                let b = self.take(n)?.to_vec();
                self.stack.push(long(b));
            }
            0x8b => {
                let n = self.len_u32()?;
                let b = self.take(n)?.to_vec();
                self.stack.push(long(b));
            }
            b'I' => {
                let line = self.line()?;
                let v = match line.trim() {
                    "01" => Value::Bool(true),
                    "00" => Value::Bool(false),
                    s => Value::Int(s.parse().map_err(|_| format!("bad INT `{s}`"))?),
                };
                self.stack.push(v);
            }
            b'G' => {
                let v = f64::from_be_bytes(self.le()?);
                self.stack.push(Value::Float(v));
            }
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            b'N' => self.stack.push(Value::None),
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.stack.push(v);
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.global(&module, &name)?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(module), Value::Str(name)) => self.global(&module, &name)?,
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b'i' => {
                let module = self.line()?;
                let name = self.line()?;
                // INST: import and call in one opcode. Never allowed, whitelisted or not.
                return Err(format!(
                    "refused to load global `{module}.{name}` (INST opcode)"
                ));
            }
            b'R' => {
                let args = self.pop()?;
                let func = self.pop()?;
                let v = reduce(func, args)?;
                self.stack.push(v);
            }
            0x81 => {
                // NEWOBJ: cls.__new__(cls, *args), the same whitelist as REDUCE.
                let args = self.pop()?;
                let cls = self.pop()?;
                let v = reduce(cls, args)?;
                self.stack.push(v);
            }
            b'b' => {
                // BUILD sets attributes (an OrderedDict's _metadata, a tensor's python
                // state); a state dict's values do not depend on them.
                self.pop()?;
                self.top()?;
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = persistent_load(pid)?;
                self.stack.push(v);
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                match self.top()? {
                    Value::Dict(d) => d.borrow_mut().push((k, v)),
                    other => return Err(format!("SETITEM on a {}", other.describe())),
                }
            }
            b'u' => {
                let items = self.pop_mark()?;
                let items = pairs(items)?;
                match self.top()? {
                    Value::Dict(d) => d.borrow_mut().extend(items),
                    other => return Err(format!("SETITEMS on a {}", other.describe())),
                }
            }
            b'a' => {
                let v = self.pop()?;
                match self.top()? {
                    Value::List(l) => l.borrow_mut().push(v),
                    other => return Err(format!("APPEND on a {}", other.describe())),
                }
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                match self.top()? {
                    Value::List(l) => l.borrow_mut().extend(items),
                    other => return Err(format!("APPENDS on a {}", other.describe())),
                }
            }
            0x82..=0x84 => {
                return Err("refused: EXT opcodes load globals from the copyreg registry".into())
            }
            b'o' | 0x92 => {
                return Err("refused: OBJ / NEWOBJ_EX build arbitrary objects".into());
            }
            other => {
                return Err(format!(
                    "unsupported opcode 0x{other:02x}; a torch state dict does not use it"
                ))
            }
        }
        Ok(false)
    }
}

fn long(b: Vec<u8>) -> Value {
    if b.len() <= 8 {
        let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
            0xFF
        } else {
            0
        };
        let mut a = [fill; 8];
        a[..b.len()].copy_from_slice(&b);
        Value::Int(i64::from_le_bytes(a))
    } else {
        Value::BigInt(b.into())
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of items for a dict".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn args_of(args: Value) -> Result<Vec<Value>, String> {
    match args {
        Value::Tuple(items) => Ok(items.to_vec()),
        other => Err(format!(
            "call arguments should be a tuple, found {}",
            other.describe()
        )),
    }
}

/// What calling a whitelisted global would have produced, computed here.
fn reduce(func: Value, args: Value) -> Result<Value, String> {
    let Value::Global(g) = func else {
        return Err(format!("REDUCE on a {}, not a callable", func.describe()));
    };
    let mut args = args_of(args)?;
    match g {
        Global::OrderedDict => {
            let mut items = Vec::new();
            if let Some(first) = args.first() {
                let list: Vec<Value> = match first {
                    Value::List(l) => l.borrow().clone(),
                    Value::Tuple(t) => t.to_vec(),
                    other => {
                        return Err(format!(
                            "OrderedDict({}) is not supported",
                            other.describe()
                        ))
                    }
                };
                for pair in list {
                    match pair {
                        Value::Tuple(kv) if kv.len() == 2 => {
                            items.push((kv[0].clone(), kv[1].clone()));
                        }
                        _ => return Err("OrderedDict items should be pairs".into()),
                    }
                }
            }
            Ok(Value::Dict(Shared::new(RefCell::new(items))))
        }
        Global::RebuildTensor | Global::RebuildTensorV2 => {
            if args.len() < 4 {
                return Err(format!("_rebuild_tensor with {} arguments", args.len()));
            }
            let Value::Storage(storage) = args[0].clone() else {
                return Err(format!("tensor storage is a {}", args[0].describe()));
            };
            Ok(Value::Tensor(TensorRef {
                storage,
                offset: args[1].usize("storage offset")?,
                shape: args[2].usizes("size")?,
                strides: args[3].usizes("stride")?,
            }))
        }
        Global::RebuildParameter | Global::RebuildParameterWithState => {
            if args.is_empty() {
                return Err("_rebuild_parameter without data".into());
            }
            Ok(args.swap_remove(0))
        }
        Global::RebuildFromTypeV2 => {
            // (func, new_type, args, state): a tensor subclass; rebuild the plain tensor.
            if args.len() < 3 {
                return Err("_rebuild_from_type_v2 with too few arguments".into());
            }
            let inner = args.swap_remove(2);
            let func = args.swap_remove(0);
            // One level only: the inner call rebuilds a tensor, never another subclass.
            if matches!(func, Value::Global(Global::RebuildFromTypeV2)) {
                return Err("nested _rebuild_from_type_v2".into());
            }
            reduce(func, inner)
        }
        Global::Device => Ok(Value::None),
        Global::Storage(_) | Global::TensorType => {
            Err("a storage or tensor type is not called in a state dict".into())
        }
    }
}

/// torch.save's persistent id for a storage: ('storage', storage_type, key, location, numel)
/// (the legacy format appends view metadata, always None since torch 1.0).
fn persistent_load(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err(format!(
            "persistent id is a {}, not a tuple",
            pid.describe()
        ));
    };
    match items.as_slice() {
        [Value::Str(kind), Value::Global(Global::Storage(dtype)), key, _location, numel, rest @ ..]
            if &**kind == "storage" =>
        {
            if rest.iter().any(|v| !matches!(v, Value::None)) {
                return Err("storage views (pre-1.0 torch) are not supported".into());
            }
            let key = match key {
                Value::Str(s) => s.to_string(),
                Value::Int(i) => i.to_string(),
                other => return Err(format!("storage key is a {}", other.describe())),
            };
            Ok(Value::Storage(StorageRef {
                key,
                dtype: *dtype,
                numel: numel.usize("storage size")?,
            }))
        }
        [Value::Str(kind), ..] if &**kind == "module" => Err(
            "the file pickles whole nn.Module classes (torch.save(model)); save model.state_dict() instead"
                .into(),
        ),
        _ => Err("persistent id is not a torch storage reference".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_os_system_without_running_it() {
        let evil = b"\x80\x02cposix\nsystem\nq\x00X\x05\x00\x00\x00touchq\x01\x85q\x02Rq\x03.";
        let err = unpickle(evil, 0).unwrap_err();
        assert!(err.contains("posix.system"), "{err}");
        let evil = b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94.";
        let err = unpickle(evil, 0).unwrap_err();
        assert!(err.contains("builtins.eval"), "{err}");
    }

    #[test]
    fn reads_a_small_state_dict() {
        // pickle.dumps({'a': [1, -2, 3.5, 'x', True, None], 'b': (2**70,)}, protocol=2)
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x03\x88NeX\x01\x00\x00\x00bq\x04\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00@\x85q\x05u.";
        let v = unpickle(p, 0).unwrap().value;
        let Value::Dict(d) = v else {
            panic!("not a dict")
        };
        let d = d.borrow();
        assert_eq!(d.len(), 2);
        let Value::List(l) = &d[0].1 else {
            panic!("not a list")
        };
        let l = l.borrow();
        assert!(matches!(l[0], Value::Int(1)));
        assert!(matches!(l[1], Value::Int(-2)));
        assert!(matches!(l[2], Value::Float(f) if f == 3.5));
        assert!(matches!(l[4], Value::Bool(true)));
        assert!(matches!(d[1].1, Value::Tuple(_)));
    }

    #[test]
    fn hostile_nesting_and_sharing_stay_cheap() {
        // A million nested tuples: reading and freeing them must not recurse per level.
        let mut deep = b"\x80\x02K\x01".to_vec();
        deep.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        deep.push(b'.');
        assert!(unpickle(&deep, 0).is_ok());
        // Each level is a tuple of the previous level twice: 2^100 elements if copied.
        let mut bomb = b"\x80\x02K\x01q\x00".to_vec();
        for _ in 0..100 {
            bomb.extend(b"h\x00h\x00\x86q\x00");
        }
        bomb.push(b'.');
        assert!(unpickle(&bomb, 0).is_ok());
        // A list that contains itself (pickle's way of writing cycles) is fine to read.
        let cycle = b"\x80\x02]q\x00h\x00a.";
        assert!(unpickle(cycle, 0).is_ok());
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u.";
        for len in 0..p.len() {
            assert!(unpickle(&p[..len], 0).is_err());
        }
        assert!(unpickle(b"\x80\x02t.", 0).is_err());
        assert!(unpickle(b"\x80\x02h\x05.", 0).is_err());
        assert!(unpickle(b"\x80\x02(0.", 0).is_err());
        assert!(unpickle(b"\xff", 0).is_err());
    }
}
