// Bundles app.jsx for the browser: node use_chat/build.mjs OUTFILE
import { build } from "esbuild";

await build({
  entryPoints: [new URL("./app.jsx", import.meta.url).pathname],
  bundle: true,
  format: "esm",
  jsx: "automatic",
  outfile: process.argv[2],
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "error",
});
