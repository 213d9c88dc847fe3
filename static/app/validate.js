// A tiny JSON Schema validator for the configurator: type, enum, minimum/maximum, pattern,
// maxLength/minLength, maxItems. Messages match widgets/config_schema.py's, so what the browser
// says while you type is what the server would say on save.

/** A message about one item of a list field (one per line), naming it: `"/shop?x": A page path such as …`. */
export function itemMessage(item, message) {
  const text = String(item);
  return `“${text.length > 40 ? `${text.slice(0, 39)}…` : text}”: ${message}`;
}

export function schemaAt(schema, path) {
  let node = schema;
  for (const part of path.split(".")) {
    node = node && node.properties ? node.properties[part] : undefined;
    if (!node) return undefined;
  }
  return node;
}

function typeOk(type, value) {
  switch (type) {
    case "string": return typeof value === "string";
    case "integer": return typeof value === "number" && Number.isInteger(value);
    case "number": return typeof value === "number" && Number.isFinite(value);
    case "boolean": return typeof value === "boolean";
    case "array": return Array.isArray(value);
    case "object": return value !== null && typeof value === "object" && !Array.isArray(value);
    default: return true;
  }
}

/** The first error message for `value` against schema `node`, or null when valid. */
export function validateValue(node, value) {
  if (!node) return null;
  if (node.type && !typeOk(node.type, value)) {
    return node.type === "integer" || node.type === "number" ? "Must be a number." : `Must be a ${node.type}.`;
  }
  if (node.enum && !node.enum.includes(value)) return `Choose one of: ${node.enum.join(", ")}.`;
  if (typeof value === "number") {
    if ((node.minimum !== undefined && value < node.minimum) || (node.maximum !== undefined && value > node.maximum)) {
      return `Must be between ${node.minimum} and ${node.maximum}.`;
    }
  }
  if (typeof value === "string") {
    if (node.maxLength !== undefined && value.length > node.maxLength) return `At most ${node.maxLength} characters.`;
    if (node.minLength !== undefined && value.length < node.minLength) return "Must not be empty.";
    if (node.pattern && !new RegExp(node.pattern).test(value)) return node.description || "Has an invalid format.";
  }
  if (Array.isArray(value)) {
    if (node.maxItems !== undefined && value.length > node.maxItems) return `At most ${node.maxItems} items.`;
    for (const item of value) {
      const msg = validateValue(node.items, item);
      if (msg) return itemMessage(item, msg);
    }
  }
  if (node.type === "object" && node.properties && value && typeof value === "object") {
    for (const [key, child] of Object.entries(value)) {
      if (!node.properties[key]) return "Unknown setting.";
      const msg = validateValue(node.properties[key], child);
      if (msg) return msg;
    }
  }
  return null;
}

/** {path: message} for every leaf of `value` that breaks the schema. */
export function validateTree(schema, value, prefix = "") {
  const errors = {};
  if (schema && schema.type === "object" && schema.properties && value && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, child] of Object.entries(value)) {
      const path = prefix ? `${prefix}.${key}` : key;
      if (!schema.properties[key]) { errors[path] = "Unknown setting."; continue; }
      Object.assign(errors, validateTree(schema.properties[key], child, path));
    }
    return errors;
  }
  const msg = validateValue(schema, value);
  if (msg) errors[prefix] = msg;
  return errors;
}
