<?php

declare(strict_types=1);

namespace Cmesh\Run;

/**
 * A cmesh-run command failed, or the client refused its input before running one.
 *
 * getErrorCode() is cmesh-run's error code: usage, not_found, backend_unavailable, denied or
 * internal. getExitStatus() is the process's exit status (2 usage, 3 not_found,
 * 4 backend_unavailable, 5 denied, 1 internal); input refused by the client itself reports 2,
 * as cmesh-run would have.
 */
final class CmeshRunException extends \RuntimeException
{
    public function __construct(
        private readonly string $errorCode,
        private readonly int $exitStatus,
        string $message,
        ?\Throwable $previous = null,
        private readonly string $hint = '',
    ) {
        parent::__construct($message, $exitStatus, $previous);
    }

    /** What to do about it, when cmesh-run said (spool mode: the result file's "hint"); else "". */
    public function getHint(): string
    {
        return $this->hint;
    }

    /** cmesh-run's error code: usage|not_found|backend_unavailable|denied|internal. */
    public function getErrorCode(): string
    {
        return $this->errorCode;
    }

    /** The exit status of the cmesh-run process (also returned by getCode()). */
    public function getExitStatus(): int
    {
        return $this->exitStatus;
    }
}
