// The validators name fields by JSON path ("shots[1].start_base_image_id", "$" = the plan); these read and write them.
export function parsePath(path) {
  if (!path || path === "$") return [];
  return path.replace(/^\$\.?/, "").split(/\.|\[(\d+)\]/).filter((p) => p !== undefined && p !== "")
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
}

export function getPath(obj, path) {
  return parsePath(path).reduce((node, key) => (node == null ? undefined : node[key]), obj);
}

export function setPath(obj, path, value) {
  const keys = parsePath(path);
  let node = obj;
  for (const key of keys.slice(0, -1)) {
    if (node[key] == null) node[key] = {};
    node = node[key];
  }
  node[keys[keys.length - 1]] = value;
}

// "shots[1].start_base_image_id" → ["shots[1].start_base_image_id", "shots[1]", "shots", "$"]
export function ancestors(path) {
  const out = [path];
  let current = path;
  while (current && current !== "$") {
    const cut = Math.max(current.lastIndexOf("."), current.lastIndexOf("["));
    current = cut > 0 ? current.slice(0, cut) : "$";
    out.push(current);
  }
  return out;
}
