// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title Aggregate3
/// @notice The `aggregate3` entry point of Multicall3, written for tests: the same ABI
/// (`aggregate3((address,bool,bytes)[])`, selector 0x82ad56cb) and the same meaning, so that
/// its runtime code can be placed at Multicall3's canonical address
/// (0xcA11bde05977b3631167028862bE2a173976CA11) on a local chain, where a real network has
/// Multicall3 itself. Each call runs in turn from this contract; a failed call with
/// `allowFailure` set is reported as `success = false` and does not undo the others; a failed
/// call without it reverts the whole batch. No value is forwarded and nothing is stored.
contract Aggregate3 {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData) {
        require(msg.value == 0, "Aggregate3: no value");
        uint256 length = calls.length;
        returnData = new Result[](length);
        for (uint256 i = 0; i < length; i++) {
            Call3 calldata c = calls[i];
            (bool success, bytes memory ret) = c.target.call(c.callData);
            require(success || c.allowFailure, "Multicall3: call failed");
            returnData[i] = Result(success, ret);
        }
    }
}
