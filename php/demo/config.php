<?php
/*
 * The demo's settings. Change them in config.local.php next to this file (it returns an
 * array with the keys to override, and is not committed), e.g.:
 *
 *     <?php return ['binary' => '/opt/cmesh-run/bin/cmesh-run', 'state_dir' => '/srv/jobs'];
 */

declare(strict_types=1);

$config = [
    // Absolute path of cmesh-run: PHP-FPM (clear_env = yes) gives the binary no PATH.
    'binary' => '/usr/local/bin/cmesh-run',
    // Where cmesh-run keeps the jobs' records and output: writable by the pool's user
    // (www-data), and outside every document root.
    'state_dir' => '/var/lib/cmesh-run-demo',
    // The PHP client (php/src in this repository, or vendor/cmesh/cmesh-run/src with composer).
    'client_src' => dirname(__DIR__) . '/src',
    // Environment of the cmesh-run process itself, e.g. ['CMESH_RUN_CONFIG' => '/etc/x.toml'].
    'env' => [],
    // The build's working directory.
    'workdir' => '/tmp',
];

if (is_file(__DIR__ . '/config.local.php')) {
    $config = array_replace($config, require __DIR__ . '/config.local.php');
}

return $config;
