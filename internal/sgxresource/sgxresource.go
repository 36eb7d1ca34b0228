// Package sgxresource declares the extended resource names through which
// the SGX device plugins of the field offer SGX to Pods. The installer
// detects them on nodes and sizes the Coordinator with them; the injector
// adds them to marbles.
package sgxresource

// Resource names, as the device plugins advertise them.
const (
	// IntelEPC is the EPC resource of Intel's SGX device plugin, which also
	// offers IntelEnclave and IntelProvision.
	IntelEPC       = "sgx.intel.com/epc"
	IntelEnclave   = "sgx.intel.com/enclave"
	IntelProvision = "sgx.intel.com/provision"
	// AzureEPC is Azure's SGX device plugin resource, in MiB of EPC.
	AzureEPC = "kubernetes.azure.com/sgx_epc_mem_in_MiB"
	// AlibabaEPC is Alibaba Cloud's SGX device plugin resource, in MiB of EPC.
	AlibabaEPC = "alibabacloud.com/sgx_epc_MiB"
)
