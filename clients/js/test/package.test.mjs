// Keeps clients/js publishable as the npm package `holdfast-client`: what
// `npm pack` ships, its version (the Cargo workspace's), and that a project
// which installs the tarball can `import 'holdfast-client'`. Offline: the
// package has no dependencies, so nothing is fetched.
import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkgDir = fileURLToPath(new URL('..', import.meta.url));
const rootDir = fileURLToPath(new URL('../../..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));

// npm quietly, without audit, funding or update notices, whatever ~/.npmrc says.
const npm = (args, cwd) =>
  execFileSync('npm', [...args, '--no-audit', '--no-fund', '--no-update-notifier', '--loglevel=error'], {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 30000,
  });

/** `version` of `[workspace.package]` in the root Cargo.toml. */
function cargoWorkspace() {
  const toml = readFileSync(join(rootDir, 'Cargo.toml'), 'utf8');
  const section = toml.split(/^\[workspace\.package\]\s*$/m)[1];
  assert.ok(section, 'Cargo.toml has a [workspace.package] table');
  const table = section.split(/^\[/m)[0];
  const field = (key) => table.match(new RegExp(`^${key}\\s*=\\s*"([^"]*)"`, 'm'))?.[1];
  return { version: field('version'), license: field('license') };
}

test('package.json: name, version and license of the workspace, an ES module with types, no dependencies', () => {
  const cargo = cargoWorkspace();
  assert.equal(pkg.name, 'holdfast-client');
  assert.ok(cargo.version, 'a version in [workspace.package]');
  assert.equal(pkg.version, cargo.version, 'clients/js/package.json version = Cargo.toml [workspace.package] version');
  assert.equal(pkg.license, cargo.license);
  assert.equal(pkg.type, 'module');
  assert.deepEqual(Object.keys(pkg.exports['.']), ['types', 'default'], 'types first, as TypeScript requires');
  assert.equal(pkg.exports['.'].types, './holdfast.d.ts');
  assert.equal(pkg.exports['.'].default, './holdfast.js');
  for (const key of ['dependencies', 'peerDependencies', 'optionalDependencies', 'bundleDependencies']) {
    assert.equal(pkg[key], undefined, `no ${key}`);
  }
  // `npm test` in clients/js runs the tests; nothing runs on install.
  assert.deepEqual(pkg.scripts, { test: 'node --test test/' });
});

test('npm pack ships exactly the module, its types, package.json and the README', () => {
  const [packed] = JSON.parse(npm(['pack', '--dry-run', '--json'], pkgDir));
  assert.equal(packed.id, `holdfast-client@${pkg.version}`);
  assert.deepEqual(packed.files.map((f) => f.path).sort(), ['README.md', 'holdfast-fossil.js', 'holdfast-transports.js', 'holdfast.d.ts', 'holdfast.js', 'package.json']);
});

test('a project that installs the tarball imports holdfast-client (offline)', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'holdfast-npm-'));
  try {
    const [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', tmp], pkgDir));
    const project = join(tmp, 'project');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'uses-holdfast', private: true }));
    npm(['install', '--offline', join(tmp, packed.filename)], project);
    const installed = join(project, 'node_modules', 'holdfast-client');
    assert.ok(existsSync(join(installed, 'holdfast.d.ts')), 'the types are installed next to the module');
    writeFileSync(
      join(project, 'check.mjs'),
      "import * as m from 'holdfast-client';\n" +
        "const c = new m.HoldfastClient('ws://127.0.0.1:1/ws');\n" +
        'console.log(JSON.stringify({ names: Object.keys(m).sort(), subclass: c instanceof EventTarget }));\n',
    );
    const seen = JSON.parse(execFileSync(process.execPath, ['check.mjs'], { cwd: project, encoding: 'utf8' }));
    const source = await import('../holdfast.js');
    assert.deepEqual(seen.names, Object.keys(source).sort(), 'the same exports as clients/js/holdfast.js');
    for (const name of ['HoldfastClient', 'Backoff', 'Position', 'CLOSE_CODES', 'closeCodeInfo', 'resolveUrl']) {
      assert.ok(seen.names.includes(name), `exports ${name}`);
    }
    assert.ok(seen.subclass, 'HoldfastClient is an EventTarget');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
